"""From a rollout batch to per-step advantages: the estimator named by ``algo.advantage``, episode scores, and
the step weighting. ``advantages(batch, algo)`` is the one call the trainer makes.

Reads the rollout schema's keys (``reward``, ``value``, ``next_value``, ``terminated``, ``truncated``, ``mask``
``[T, B]``; ``success``, ``group_id`` ``[B]``) of any batch-like object. Estimators are of two kinds: the per-step
``gae`` and ``reinforce_pp`` read the rewards; every other registered name is an episode estimator
``fn(scores [B], group_ids [B]) -> [B]``, its value broadcast over the episode's steps.
"""

from __future__ import annotations

from typing import Any

import torch

from vlarl.algorithms.advantages import gae, get_advantage, normalize, reinforce_pp


def estimator_name(algo: Any) -> str:
    """``algo.advantage``, or the algorithm's own: ``gae`` for PPO, ``grpo`` for GRPO."""
    return algo.advantage or ("gae" if algo.name == "ppo" else "grpo")


def discounts(batch: Any, algo: Any) -> torch.Tensor:
    """The discount of each decision ``[T, B]``: ``algo.gamma`` per decision, or gamma^(env steps it ran) with
    ``algo.discount_unit == "env_step"`` (a chunk of K steps discounts what follows it by gamma^K)."""
    if algo.discount_unit == "env_step":
        return algo.gamma ** batch.steps.float()
    return torch.full(batch.reward.shape, float(algo.gamma))


def episode_scores(batch: Any, kind: str, gamma: torch.Tensor) -> torch.Tensor:
    """Per-episode scores ``[B]``: ``success`` (0/1), ``return`` (the discounted sum of rewards, ``gamma`` the
    per-decision discounts ``[T, B]``: under sparse reward an earlier success scores more) or ``max_reward`` (the
    best step reward: under shaped rewards, how close it came)."""
    if kind == "success":
        return batch.success.float()
    if kind == "return":
        discount = torch.cumprod(torch.cat([torch.ones_like(gamma[:1]), gamma[:-1]]), dim=0)  # prod_{u<t} gamma_u
        return (batch.reward * batch.mask * discount).sum(0)
    if kind == "max_reward":
        return batch.reward.masked_fill(~batch.mask, -torch.inf).amax(0)
    raise ValueError(f"episode score {kind!r}; choose success, return or max_reward")


def advantages(batch: Any, algo: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets ``[T, B]``, zero where ``mask`` is false.

    Episode estimators rank ``episode_scores(batch, algo.score)``; without a critic the targets are the rollout
    values (unused).
    ``algo.step_weight == "episode"`` scales each episode's steps by mean length / its length, so an episode
    weighs the same however many steps it ran (failures run to the step limit); ``algo.neg_adv_weight`` scales
    negative advantages.
    """
    name = estimator_name(algo)
    ret, gamma = batch.value, discounts(batch, algo)
    if name == "gae":
        adv, ret = gae(batch.reward, batch.value, batch.next_value, batch.terminated, batch.truncated, gamma, algo.lam)
        if algo.norm_adv:
            adv = normalize(adv, batch.mask)
    elif name == "reinforce_pp":  # per-step return-to-go, whitened over the batch: no critic
        adv = reinforce_pp(batch.reward, batch.terminated, batch.truncated, gamma, mask=batch.mask)
    else:
        scores = episode_scores(batch, algo.score, gamma)
        extra = {"normalize_std": algo.group_std} if name == "grpo" else {}
        adv = get_advantage(name)(scores, batch.group_id, **extra).unsqueeze(0).expand_as(batch.value)
    if algo.step_weight == "episode":
        steps = batch.mask.sum(0).clamp(min=1).float()
        adv = adv * (steps.mean() / steps)
    if algo.neg_adv_weight != 1.0:
        adv = torch.where(adv < 0, adv * algo.neg_adv_weight, adv)
    return torch.where(batch.mask, adv, 0.0), torch.where(batch.mask, ret, 0.0)
