"""Advantage estimators: GAE, GRPO, RLOO, REINFORCE++, plus masked whitening and a name registry.

All estimators run under ``torch.no_grad()``: advantages are constants in the policy gradient.
Per-step tensors are time-major, ``[T, B]`` (T steps, B envs); per-sample tensors are flat, ``[N]``.
"""

from __future__ import annotations

import torch

from vlarl.algorithms.registry import Registry

ADVANTAGES = Registry("advantage estimator")
register_advantage = ADVANTAGES.register
get_advantage = ADVANTAGES.get


def _check_shapes(ref: torch.Tensor, **tensors: torch.Tensor) -> None:
    if ref.dim() != 2:
        raise ValueError(f"expected time-major [T, B] tensors, got shape {tuple(ref.shape)}")
    for name, t in tensors.items():
        if t.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.float()


def normalize(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Whiten ``x`` (any shape): ``(x - mean) / sqrt(var + eps)`` over the entries where ``mask`` is nonzero.

    ``mask`` (same shape as ``x``, bool or 0/1) defaults to all-valid. The variance is the population one
    (``unbiased=False``). Masked-out entries come back as 0; an all-masked input gives all zeros.
    """
    x = _float(x)
    valid = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    n = valid.sum()
    if n == 0:
        return torch.zeros_like(x)
    xv = torch.where(valid, x, 0.0)
    mean = xv.sum() / n
    var = (torch.where(valid, x - mean, 0.0) ** 2).sum() / n
    return torch.where(valid, (x - mean) * torch.rsqrt(var + eps), 0.0)


@register_advantage("gae")
@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a ``[T, B]`` rollout; returns ``(advantages, returns)``, both ``[T, B]``.

    ``gamma`` is a float or a per-step discount ``[T, B]`` (a chunk of n env steps: gamma^n).

    ``next_values[t]`` is V of the observation that followed step t. When an episode is truncated at t the
    caller supplies V(final observation) there; when it terminates at t the entry is ignored (bootstrap is 0).

        delta_t = r_t + gamma * next_values[t] * (1 - terminated_t) - values[t]
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done = terminated | truncated,  A_T = 0

    So both kinds of episode end stop the accumulation, only termination zeroes the bootstrap. The last row
    always bootstraps from ``next_values[T-1]`` (the rollout cut is not an episode end). ``returns = A + values``.
    """
    _check_shapes(values, rewards=rewards, next_values=next_values, terminated=terminated, truncated=truncated)
    not_term = (~terminated.bool()).to(values.dtype)
    not_done = (~(terminated.bool() | truncated.bool())).to(values.dtype)
    gamma = torch.as_tensor(gamma, dtype=values.dtype).expand_as(values)
    adv = torch.empty_like(values)
    last = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma[t] * next_values[t] * not_term[t] - values[t]
        last = delta + gamma[t] * lam * not_done[t] * last
        adv[t] = last
    return adv, adv + values


def _groups(group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map arbitrary group ids ``[N]`` to ``(index [N] in 0..G-1, counts [G])``."""
    _, index, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    return index, counts


@register_advantage("grpo")
@torch.no_grad()
def grpo(scores: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6, normalize_std: bool = True) -> torch.Tensor:
    """GRPO outcome advantages: per group, ``(score - mean) / (std + eps)``; ``scores``, ``group_ids`` are ``[N]``.

    ``std`` is the Bessel-corrected (``unbiased=True``) group standard deviation, as ``torch.std`` in veRL.
    ``normalize_std=False`` gives ``score - mean`` (Dr. GRPO). Groups need not be contiguous. A group whose
    scores are all identical (including a group of one) gets exactly 0.
    """
    s = _float(scores)
    index, counts = _groups(group_ids)
    n_groups = counts.numel()
    mean = torch.zeros(n_groups, dtype=s.dtype, device=s.device).index_add_(0, index, s) / counts
    adv = s - mean[index]
    if normalize_std:
        sq = torch.zeros(n_groups, dtype=s.dtype, device=s.device).index_add_(0, index, adv**2)
        std = torch.sqrt(sq / (counts - 1).clamp(min=1))
        adv = adv / (std[index] + eps)
    g_max = torch.full((n_groups,), -torch.inf, dtype=s.dtype, device=s.device)
    g_max = g_max.scatter_reduce(0, index, s, "amax")
    g_min = torch.full((n_groups,), torch.inf, dtype=s.dtype, device=s.device)
    g_min = g_min.scatter_reduce(0, index, s, "amin")
    return torch.where((g_max == g_min)[index], 0.0, adv)


@register_advantage("rloo")
@torch.no_grad()
def rloo(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: ``score`` minus the mean of the *other* members of its group; all ``[N]``.

    A group of one has no baseline and gets 0.
    """
    s = _float(scores)
    index, counts = _groups(group_ids)
    sums = torch.zeros(counts.numel(), dtype=s.dtype, device=s.device).index_add_(0, index, s)
    n = counts[index]
    others_mean = (sums[index] - s) / (n - 1).clamp(min=1)
    return torch.where(n > 1, s - others_mean, 0.0)


@register_advantage("reinforce_pp")
@torch.no_grad()
def reinforce_pp(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float | torch.Tensor,
    eps: float = 1e-8,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++ advantages ``[T, B]``: discounted return-to-go, then whitened over the whole batch.
    ``gamma``: a float or a per-step discount ``[T, B]``.

    ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}`` with ``done = terminated | truncated`` and ``G_T = 0``: returns
    reset at every episode end and there is no critic, so truncation does not bootstrap. The result is
    ``normalize(G, mask, eps)`` (batch mean/std over the ``mask``-valid steps, no per-group baseline).
    """
    _check_shapes(rewards, terminated=terminated, truncated=truncated)
    rewards = _float(rewards)
    not_done = (~(terminated.bool() | truncated.bool())).to(rewards.dtype)
    gamma = torch.as_tensor(gamma, dtype=rewards.dtype).expand_as(rewards)
    ret = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = rewards[t] + gamma[t] * not_done[t] * last
        ret[t] = last
    return normalize(ret, mask, eps=eps)
