"""The optimisation half of RL: optimizer groups, learning-rate schedule, PPO epochs over minibatches, the loss,
and their saved state. The trainer hands it a batch with advantages; it knows nothing of envs.

Shapes: a ``Batch`` with leading dims ``[T, B]``; ``adv``/``ret`` ``[T, B, U]``, U RL steps per decision (1, or K at
action reward granularity), zero where no episode ran.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlarl import algorithms
from vlarl.algorithms.estimate import estimator_name
from vlarl.rollout.schema import Batch


def at_granularity(logp: torch.Tensor, granularity: str) -> torch.Tensor:
    """Per-token log-probs ``[N, K, A]`` -> the ratio's unit: ``token`` ``[N, K*A]``, ``action`` (sum over A)
    ``[N, K]``, ``chunk`` (sum over K and A) ``[N, 1]``."""
    if granularity == "token":
        return logp.flatten(1)
    if granularity == "action":
        return logp.sum(-1)
    if granularity == "chunk":
        return logp.sum((-2, -1)).unsqueeze(-1)
    raise ValueError(f"logprob granularity {granularity!r}; choose token, action or chunk")


def spread(x: torch.Tensor, width: int) -> torch.Tensor:
    """Per-RL-step ``x [N, U]`` -> per-ratio ``[N, width]``: each of the U steps covers ``width / U`` ratios in order
    (U = 1: all of them; U = K env steps at token granularity: each action's A tokens)."""
    if width % x.shape[1]:
        raise ValueError(f"{x.shape[1]} RL steps per decision cannot share {width} ratios")
    return x.repeat_interleave(width // x.shape[1], dim=1)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device``: asked for, or ``auto`` on a CUDA device with bf16."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())


def autocast(device: torch.device, precision: str):
    """bf16 autocast where ``uses_bf16``; else nothing."""
    use = uses_bf16(device, precision)
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def accumulate(parts: Iterable[tuple[float, Callable[[], tuple[torch.Tensor, dict[str, float]]]]]) -> dict[str, float]:
    """Gradient accumulation: for each ``(weight, loss_fn)``, backward of ``weight * loss``; weights sum to 1 over
    one optimizer step. Returns the weighted sums of the parts' metrics (their means over the step)."""
    sums: dict[str, float] = defaultdict(float)
    for weight, loss_fn in parts:
        loss, metrics = loss_fn()
        (loss * weight).backward()
        for k, v in metrics.items():
            sums[k] += v * weight
    return dict(sums)


def clip_and_step(optimizer: torch.optim.Optimizer, grad_clip: float, scheduler: Any = None) -> float:
    """Clip the gradient norm over every param group to ``grad_clip`` (0: no clipping), step the optimizer (and
    ``scheduler``), clear the gradients; returns the norm before clipping."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2: the norm over all shards


def share(minibatch: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """Rank ``rank``'s contiguous part of a minibatch's rows, and the factor its loss is scaled by so the mean of the
    ranks' gradients (FSDP's reduction) is the whole minibatch's: ``world``. A minibatch of fewer rows than ranks is
    computed whole by every rank (factor 1)."""
    if world == 1 or len(minibatch) < world:
        return minibatch, 1.0
    return np.array_split(minibatch, world)[rank], float(world)


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics averaged over the ranks of the default process group (unchanged without one)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(keys, (values / dist.get_world_size()).tolist()))


class Learner:
    """AdamW over two groups (policy at ``algo.lr`` with linear warm-up; value head and critic at ``algo.value_lr``),
    a frozen reference copy when ``algo.kl_coef > 0``, and ``update`` (PPO epochs).

    ``rank``/``world``: one rank of a data-parallel learner group (``distributed/learner_group.py``): every rank
    draws the same minibatches and computes its ``share`` of each."""

    def __init__(self, policy: Any, cfg: Any, temperature: float, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world
        algo = cfg.algo
        self.policy, self.algo, self.precision = policy, algo, cfg.policy.precision
        self.temperature, self.use_value = temperature, estimator_name(algo) == "gae"  # only GAE reads values
        if algo.freeze_vision:
            policy.freeze_vision()
        if algo.freeze_backbone:
            policy.freeze_backbone()
        self.lora = cfg.policy.lora_rank > 0
        groups = policy.param_groups()
        self.optimizer = torch.optim.AdamW(
            [{"params": groups["policy"], "lr": algo.lr}, {"params": groups["value"], "lr": algo.value_lr}],
            weight_decay=0.0,
        )
        warm = max(algo.lr_warmup_steps, 1)  # policy steps; the value head starts at its full rate
        policy_warmup, value_constant = (lambda step: min(1.0, (step + 1) / warm)), (lambda step: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, [policy_warmup, value_constant])
        self.reference = copy.deepcopy(policy).eval().requires_grad_(False) if algo.kl_coef > 0 else None

    def update(
        self, batch: Batch, adv: torch.Tensor, ret: torch.Tensor, rng: np.random.Generator, warmup: bool = False
    ) -> dict[str, float]:
        """PPO epochs over the valid steps of ``batch`` (``adv``/``ret`` ``[T, B, U]``), minibatches drawn from ``rng``;
        with ``warmup`` only the value head (and a separate critic) learns. Returns mean metrics.

        Without a critic or a KL penalty, steps with zero advantage (groups without mixed outcomes)
        carry no gradient and are left out; with none left an optimizer step would still move the
        weights by Adam's momentum, so the update is skipped. The KL penalty holds every step.
        """
        algo, policy, use_value = self.algo, self.policy, self.use_value
        rows = batch.mask if use_value or self.reference is not None else batch.mask & (adv != 0).any(-1)
        if not rows.any():
            return {"update_skipped": 1.0}
        t_idx, b_idx = rows.nonzero(as_tuple=True)
        if algo.update_fraction < 1.0:
            keep = np.sort(rng.permutation(len(t_idx))[: max(1, round(algo.update_fraction * len(t_idx)))])
            t_idx, b_idx = t_idx[keep], b_idx[keep]
        n = len(t_idx)
        micro = max(1, algo.minibatch_size // algo.grad_accum)
        if uses_bf16(policy.device, self.precision):
            batch = dataclasses.replace(batch, logprob=self.rescore(batch, t_idx, b_idx, micro))
        sums: dict[str, float] = defaultdict(float)
        count = 0
        policy.train()
        steps = [
            order[s : s + algo.minibatch_size]
            for order in (rng.permutation(n) for _ in range(algo.epochs))
            for s in range(0, n, algo.minibatch_size)
        ]
        taken = 0
        for mb in steps:
            mine, scale = share(mb, self.rank, self.world)
            parts = [torch.as_tensor(mine[m0 : m0 + micro]) for m0 in range(0, len(mine), micro)]
            metrics = accumulate(
                (
                    scale * len(r) / len(mb),
                    lambda r=r: self.loss_of(batch, adv, ret, t_idx[r], b_idx[r], warmup, use_value),
                )
                for r in parts
            )
            metrics = mean_over_ranks(metrics)  # the same on every rank: target_kl stops them all at one step
            for k, v in metrics.items():
                sums[k] += v * len(mb)
            count += len(mb)
            if algo.target_kl and not warmup and metrics.get("policy/approx_kl", 0.0) > algo.target_kl:
                self.optimizer.zero_grad(set_to_none=True)  # this minibatch's step would leave the trust region
                break
            taken += 1
            if warmup:  # critic warm-up trains the value head (and a separate critic) only
                for p in self.optimizer.param_groups[0]["params"]:
                    p.grad = None
            # the policy's lr warm-up starts with its first update
            sums["grad_norm"] += clip_and_step(
                self.optimizer, algo.grad_clip, None if warmup else self.scheduler
            ) * len(mb)
        policy.eval()
        means = {k: v / max(count, 1) for k, v in sums.items()}
        return means | {"update_skipped": 0.0, "samples": n, "steps_taken": taken / len(steps)}

    @torch.no_grad()
    def rescore(self, batch: Batch, t_idx: torch.Tensor, b_idx: torch.Tensor, chunk: int) -> torch.Tensor:
        """``batch.logprob`` with steps ``(t_idx, b_idx)`` re-scored by the learner's own pass (bf16 autocast).

        Rollouts decode token by token in fp32; under bf16 the learner's one-pass scores differ (CPU: mean 0.004,
        max 0.055 nats per token), which would read as a policy change before any update. As veRL does, the
        update's old log-probs are the learner's, so every ratio starts at 1.
        """
        logprob = batch.logprob.clone()
        for i in range(0, len(t_idx), chunk):
            t, b = t_idx[i : i + chunk], b_idx[i : i + chunk]
            with autocast(self.policy.device, self.precision):
                inputs = self.policy.prepare(batch.observation(t, b))
                tokens = batch.action_tokens[t, b].to(self.policy.device)
                draw = batch.chain[t, b].to(self.policy.device), batch.denoise_step[t, b].to(self.policy.device)
                logprob[t, b] = self.policy.evaluate(inputs, tokens, self.temperature, *draw)[0].float().cpu()
        return logprob

    def loss_of(self, batch, adv, ret, t, b, warmup: bool, use_value: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of decisions ``(t[i], b[i])`` of ``batch`` and its metrics."""
        policy = self.policy
        units = batch.valid[t, b] if adv.shape[-1] > 1 else batch.mask[t, b].unsqueeze(-1)  # [N, U] RL steps run
        with autocast(policy.device, self.precision):
            return self.loss(
                policy.prepare(batch.observation(t, b)),
                batch.action_tokens[t, b].to(policy.device),
                (batch.chain[t, b].to(policy.device), batch.denoise_step[t, b].to(policy.device)),
                batch.logprob[t, b],
                adv[t, b],
                batch.value[t, b],
                ret[t, b],
                units,
                warmup,
                use_value,
            )

    def loss(self, inputs, tokens, draw, old_logp, adv, old_value, ret, units, warmup: bool, use_value: bool):
        """The PPO loss of one micro-batch (policy, value, KL to the reference) and its metrics; ``tokens`` and
        ``draw`` (a flow policy's chain and denoise step) what the rollout drew, ``adv``, ``ret``, ``units``
        ``[N, U]``, ``old_value`` ``[N, K]``."""
        algo, dev = self.algo, self.policy.device
        logp, entropy, value = self.policy.evaluate(inputs, tokens, self.temperature, *draw)
        old_logp, adv, old_value, ret, units = (x.to(dev) for x in (old_logp, adv, old_value, ret, units))
        logp, old_logp = (
            at_granularity(logp, algo.logprob_granularity),
            at_granularity(old_logp, algo.logprob_granularity),
        )
        entropy = entropy.flatten(1)
        mask = spread(units, logp.shape[1])
        pg, metrics = algorithms.get_policy_loss(algo.policy_loss)(
            logp,
            old_logp,
            spread(adv, logp.shape[1]),
            mask,
            algo.clip_low,
            algo.clip_high,
            algo.clip_c or None,
            algo.agg,
        )
        ent = algorithms.entropy_bonus(entropy, spread(units, entropy.shape[1]), algo.agg)
        loss = (0.0 if warmup else 1.0) * (pg - algo.ent_coef * ent)
        metrics = {f"policy/{k}": v for k, v in metrics.items()} | {
            "policy/loss": pg.item(),
            "policy/entropy": ent.item(),
        }
        if use_value:
            u = units.shape[1]  # V(s_t) alone, or V before each env step of the chunk
            vl, vm = algorithms.value_loss(
                value[:, :u],
                old_value[:, :u],
                ret,
                units,
                algo.vf_clip or None,
                algo.value_loss,
                algo.huber_delta,
                algo.agg,
            )
            loss = loss + algo.vf_coef * vl
            metrics |= {f"value/{k}": v for k, v in vm.items()} | {"value/loss": vl.item()}
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = self.reference.evaluate(inputs, tokens, self.temperature, *draw)[0]
            ref_logp = at_granularity(ref_logp, algo.logprob_granularity)
            kl = algorithms.aggregate(algorithms.kl_penalty(logp, ref_logp, algo.kl_kind), mask, algo.agg)
            loss = loss + algo.kl_coef * kl
            metrics["policy/kl_ref"] = kl.item()
        return loss, metrics

    def sync(self) -> None:
        """Nothing to publish: the rollouts use this learner's policy itself (``LearnerGroup.sync`` gathers)."""

    def close(self) -> None:
        """Nothing to release (``LearnerGroup.close`` stops its ranks)."""

    def save(self, folder: Path) -> None:
        """The train state in ``folder``: ``policy/`` (the exported policy, every weight once), with LoRA also
        ``adapters.safetensors`` (the trained adapters and heads: the export merges adapters), ``optimizer.pt``,
        ``scheduler.pt`` and ``rng.safetensors`` (torch's global RNG)."""
        self.policy.save(folder / "policy")
        if self.lora:
            trainable = {k: v.detach().cpu().contiguous() for k, v in self.policy.named_parameters() if v.requires_grad}
            save_file(trainable, folder / "adapters.safetensors")
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
        save_file({"torch_rng": torch.get_rng_state()}, folder / "rng.safetensors")

    def load(self, folder: Path) -> None:
        """The train state ``save`` wrote; with LoRA the base weights stay as built (frozen), the rest as trained."""
        if self.lora:
            trained = load_file(folder / "adapters.safetensors")
            missing = {k for k, v in self.policy.named_parameters() if v.requires_grad} - set(trained)
            if missing:
                raise ValueError(f"{folder}/adapters.safetensors lacks trainable tensors: {sorted(missing)[:5]}")
            self.policy.load_state_dict(trained, strict=False)
        else:  # full fine-tuning: the exported policy holds every weight, bit-exact (fp32 safetensors)
            self.policy.load(folder / "policy")
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        torch.set_rng_state(load_file(folder / "rng.safetensors")["torch_rng"])
