"""The optimisation half of RL: optimizer groups, learning-rate schedule, PPO epochs over minibatches, the loss,
and their saved state. The trainer hands it a batch with advantages; it knows nothing of envs.

Shapes: a ``Batch`` with leading dims ``[T, B]``; ``adv``/``ret`` ``[T, B]`` (zero where ``mask`` is false).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlarl import algorithms
from vlarl.rollout.collector import Batch
from vlarl.sft import autocast, uses_bf16


class Learner:
    """AdamW over two groups (policy at ``algo.lr`` with linear warm-up; value head and critic at ``algo.value_lr``),
    a frozen reference copy when ``algo.kl_coef > 0``, and ``update`` (PPO epochs)."""

    def __init__(self, policy: Any, cfg: Any, temperature: float, use_value: bool):
        algo = cfg.algo
        self.policy, self.algo, self.precision = policy, algo, cfg.policy.precision
        self.temperature, self.use_value = temperature, use_value
        critic = [] if policy.critic is None else list(policy.critic.parameters())
        head = [p for p in [*policy.value_head.parameters(), *critic] if p.requires_grad]
        body = [p for p in policy.parameters() if p.requires_grad and all(p is not h for h in head)]
        self.optimizer = torch.optim.AdamW(
            [{"params": body, "lr": algo.lr}, {"params": head, "lr": algo.value_lr}], weight_decay=0.0
        )
        warm = max(algo.lr_warmup_steps, 1)  # policy steps; the value head starts at its full rate
        policy_warmup, value_constant = (lambda step: min(1.0, (step + 1) / warm)), (lambda step: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, [policy_warmup, value_constant])
        self.reference = copy.deepcopy(policy).eval().requires_grad_(False) if algo.kl_coef > 0 else None

    def update(
        self, batch: Batch, adv: torch.Tensor, ret: torch.Tensor, rng: np.random.Generator, warmup: bool = False
    ) -> dict[str, float]:
        """PPO epochs over the valid steps of ``batch`` (``adv``/``ret`` ``[T, B]``), minibatches drawn from ``rng``;
        with ``warmup`` only the value head (and a separate critic) learns. Returns mean metrics.

        Without a critic or a KL penalty, steps with zero advantage (groups without mixed outcomes)
        carry no gradient and are left out; with none left an optimizer step would still move the
        weights by Adam's momentum, so the update is skipped. The KL penalty holds every step.
        """
        algo, policy, use_value = self.algo, self.policy, self.use_value
        rows = batch.mask if use_value or self.reference is not None else batch.mask & (adv != 0)
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
            kl = 0.0
            for m0 in range(0, len(mb), micro):
                rows = torch.as_tensor(mb[m0 : m0 + micro])
                t, bb = t_idx[rows], b_idx[rows]
                metrics = self.backward(batch, adv, ret, t, bb, len(rows) / len(mb), warmup, use_value)
                for k, v in metrics.items():
                    sums[k] += v * len(rows)
                count += len(rows)
                kl += metrics.get("policy/approx_kl", 0.0) * len(rows) / len(mb)
            if algo.target_kl and not warmup and kl > algo.target_kl:
                self.optimizer.zero_grad(set_to_none=True)  # this minibatch's step would leave the trust region
                break
            taken += 1
            if warmup:  # critic warm-up trains the value head (and a separate critic) only
                for p in self.optimizer.param_groups[0]["params"]:
                    p.grad = None
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], algo.grad_clip
            )
            self.optimizer.step()
            if not warmup:  # the policy's lr warm-up starts with its first update
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            sums["grad_norm"] += float(grad_norm) * len(mb)
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
                tokens = batch.tokens[t, b].to(self.policy.device)
                logprob[t, b] = self.policy.evaluate(inputs, tokens, self.temperature)[0].float().cpu()
        return logprob

    def backward(self, batch, adv, ret, t, b, scale: float, warmup: bool, use_value: bool) -> dict[str, float]:
        """Accumulate ``scale`` x the loss gradient of steps ``(t[i], b[i])`` into ``.grad``; returns its metrics."""
        policy = self.policy
        with autocast(policy.device, self.precision):
            loss, metrics = self.loss(
                policy.prepare(batch.observation(t, b)),
                batch.tokens[t, b].to(policy.device),
                batch.logprob[t, b],
                adv[t, b],
                batch.value[t, b],
                ret[t, b],
                warmup,
                use_value,
            )
        (loss * scale).backward()
        return metrics

    def loss(self, inputs, tokens, old_logp, adv, old_value, ret, warmup: bool, use_value: bool):
        """The PPO loss of one micro-batch (policy, value, KL to the reference) and its metrics."""
        algo, dev = self.algo, self.policy.device
        logp, entropy, value = self.policy.evaluate(inputs, tokens, self.temperature)
        old_logp, adv, old_value, ret = (x.to(dev) for x in (old_logp, adv, old_value, ret))
        if algo.logprob_granularity == "action":
            logp, old_logp = logp.sum(-1, keepdim=True), old_logp.sum(-1, keepdim=True)
        mask = torch.ones_like(logp, dtype=torch.bool)
        pg, metrics = algorithms.get_policy_loss(algo.policy_loss)(
            logp,
            old_logp,
            adv.unsqueeze(-1).expand_as(logp),
            mask,
            algo.clip_low,
            algo.clip_high,
            algo.clip_c or None,
            algo.agg,
        )
        ent = algorithms.entropy_bonus(entropy, torch.ones_like(entropy, dtype=torch.bool), algo.agg)
        loss = (0.0 if warmup else 1.0) * (pg - algo.ent_coef * ent)
        metrics = {f"policy/{k}": v for k, v in metrics.items()} | {
            "policy/loss": pg.item(),
            "policy/entropy": ent.item(),
        }
        if use_value:
            one = torch.ones_like(value, dtype=torch.bool).unsqueeze(-1)
            vl, vm = algorithms.value_loss(
                value.unsqueeze(-1),
                old_value.unsqueeze(-1),
                ret.unsqueeze(-1),
                one,
                algo.vf_clip or None,
                algo.value_loss,
                algo.huber_delta,
                algo.agg,
            )
            loss = loss + algo.vf_coef * vl
            metrics |= {f"value/{k}": v for k, v in vm.items()} | {"value/loss": vl.item()}
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = self.reference.evaluate(inputs, tokens, self.temperature)[0]
            if algo.logprob_granularity == "action":
                ref_logp = ref_logp.sum(-1, keepdim=True)
            kl = algorithms.aggregate(algorithms.kl_penalty(logp, ref_logp, algo.kl_kind), mask, algo.agg)
            loss = loss + algo.kl_coef * kl
            metrics["policy/kl_ref"] = kl.item()
        return loss, metrics

    def save(self, folder: Path) -> None:
        """``optimizer.pt`` and ``scheduler.pt`` in ``folder``."""
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")

    def load(self, folder: Path) -> None:
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
