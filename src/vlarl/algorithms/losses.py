"""PPO-family losses: masked aggregation, clipped policy loss, value loss, entropy bonus and KL estimators.

Per-token tensors are ``[B, L]`` (B sequences, L tokens; L = 1 for one action per step). ``mask`` has the same
shape, bool or 0/1 float, nonzero = valid; masked-out entries never reach a loss or a metric, even if NaN.
Losses return ``(scalar loss, metrics)`` with metrics as python floats computed under ``no_grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlarl.algorithms.registry import Registry

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
KL_KINDS = ("k1", "k2", "k3")
POLICY_LOSSES = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register
get_policy_loss = POLICY_LOSSES.get


def _masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    m = mask.to(x.dtype)
    xm = torch.where(mask.bool(), x, 0.0) * m
    return xm.sum() if dim is None else xm.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is nonzero (over all entries, or along ``dim``).

    Where nothing is valid the result is 0 (finite, still attached to the graph of ``x``).
    """
    count = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim)
    return _masked_sum(x, mask, dim) / count.clamp(min=1e-8)


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """Reduce a per-token ``loss [B, L]`` to a scalar over the valid entries of ``mask [B, L]``.

    - ``"token-mean"``: sum over valid tokens / number of valid tokens in the batch.
    - ``"seq-mean-token-sum"``: per-sequence sum over valid tokens, then mean over sequences with >= 1 valid token.
    - ``"seq-mean-token-mean"``: per-sequence mean over valid tokens, then mean over those same sequences.

    An all-masked batch gives a finite 0 that still backpropagates (zero gradients).
    """
    if mode == "token-mean":
        return masked_mean(loss, mask)
    seq_valid = mask.to(loss.dtype).sum(-1) > 0
    if mode == "seq-mean-token-sum":
        return masked_mean(_masked_sum(loss, mask, dim=-1), seq_valid)
    if mode == "seq-mean-token-mean":
        return masked_mean(masked_mean(loss, mask, dim=-1), seq_valid)
    raise ValueError(f"unknown aggregation mode {mode!r}; valid: {list(AGG_MODES)}")


def _frac(cond: torch.Tensor, mask: torch.Tensor) -> float:
    return masked_mean(cond.to(torch.float32), mask).item()


@register_policy_loss("ppo")
def ppo_policy_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped PPO surrogate on ``[B, L]`` inputs; returns ``(loss, metrics)``.

    ``ratio = exp(logprob - old_logprob)``, ``pg1 = -A * ratio``, ``pg2 = -A * clamp(ratio, 1 - clip_low,
    1 + clip_high)``, per-token loss ``max(pg1, pg2)`` (``clip_high > clip_low`` is DAPO's clip-higher). With
    ``clip_c > 1`` (dual-clip PPO) tokens with ``A < 0`` are further capped at ``-A * clip_c``. The per-token
    loss is reduced with ``aggregate(..., agg)``. The log-ratio is clamped to [-20, 20] before ``exp``.

    Metrics over valid tokens: ``clip_frac`` (pg2 > pg1), ``dual_clip_frac`` (dual cap taken), ``approx_kl``
    (k3: mean of ``(ratio - 1) - log ratio``), ``ratio_max``, ``ratio_min``, ``ratio_mean``.
    """
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"clip_c must be > 1 for dual-clip PPO, got {clip_c}")
    log_ratio = torch.clamp(logprob - old_logprob, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(pg1, pg2)
    per_token = clipped
    dual = torch.zeros_like(clipped, dtype=torch.bool)
    if clip_c is not None:
        pg3 = -advantages * clip_c
        dual = (advantages < 0) & (pg3 < clipped)
        per_token = torch.where(dual, pg3, clipped)
    loss = aggregate(per_token, mask, agg)

    with torch.no_grad():
        valid = mask.bool()
        r = ratio[valid]
        metrics = {
            "clip_frac": _frac(pg2 > pg1, mask),
            "dual_clip_frac": _frac(dual, mask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
            "ratio_max": r.max().item() if r.numel() else 0.0,
            "ratio_min": r.min().item() if r.numel() else 0.0,
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, metrics


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` over valid entries (population variances); 0 when ``Var[R] == 0`` or none valid."""
    with torch.no_grad():
        valid = mask.bool()
        v, r = values[valid].double(), returns[valid].double()
        if r.numel() == 0:
            return 0.0
        var_r = r.var(unbiased=False)
        if var_r == 0:
            return 0.0
        return (1.0 - (r - v).var(unbiased=False) / var_r).item()


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = None,
    kind: str = "squared",
    huber_delta: float = 1.0,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Critic regression loss on ``[B, L]`` inputs; returns ``(loss, metrics)``.

    ``kind="squared"``: ``0.5 * (V - R)^2``; ``kind="huber"``: ``F.huber_loss`` with ``huber_delta`` (equals the
    squared error for ``|V - R| < delta``). With ``clip``: ``V_clip = V_old + clamp(V - V_old, -clip, clip)`` and the
    per-token loss is ``max(err(V), err(V_clip))``. Metrics: ``vf_clip_frac`` (fraction of valid tokens where the
    clipped error was larger), ``explained_variance`` (see ``explained_variance``), ``value_mean``.
    """
    if kind == "squared":
        err = lambda v: 0.5 * (v - returns) ** 2
    elif kind == "huber":
        err = lambda v: F.huber_loss(v, returns, reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"unknown value loss kind {kind!r}; valid: ['huber', 'squared']")
    per_token = err(values)
    vf_clip_frac = 0.0
    if clip is not None:
        clipped_err = err(old_values + torch.clamp(values - old_values, -clip, clip))
        vf_clip_frac = _frac(clipped_err.detach() > per_token.detach(), mask)
        per_token = torch.maximum(per_token, clipped_err)
    metrics = {
        "vf_clip_frac": vf_clip_frac,
        "explained_variance": explained_variance(values, returns, mask),
        "value_mean": masked_mean(values.detach(), mask).item(),
    }
    return aggregate(per_token, mask, agg), metrics


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, agg: str = "token-mean") -> torch.Tensor:
    """Aggregated per-token entropy ``[B, L]`` -> scalar; the trainer subtracts ``coef * entropy_bonus``."""
    return aggregate(entropy, mask, agg)


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate ``[B, L]`` of KL(pi || ref) from samples of pi, with ``log r = ref_logprob - logprob``.

    ``k1 = -log r`` (unbiased, can be negative), ``k2 = 0.5 * (log r)^2``, ``k3 = (r - 1) - log r`` (unbiased, >= 0).
    """
    log_r = ref_logprob - logprob
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; valid: {list(KL_KINDS)}")
