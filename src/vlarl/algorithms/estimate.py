"""From a rollout batch to advantages: the estimator named by ``algo.advantage``, episode scores, the reward
granularity and the step weighting. ``advantages(batch, algo)`` is the one call the trainer makes.

Reads a rollout ``Batch`` (``reward``, ``value``, ``next_value`` ``[T, B, K]``; ``terminated``, ``truncated``,
``mask``, ``steps`` ``[T, B]``; ``success``, ``group_id`` ``[B]``). ``rl_steps`` lays it out as the sequence of RL
steps the estimators run over: decisions (``algo.reward_granularity == "chunk"``: a chunk's rewards summed, V
of its first observation) or env steps (``"action"``: every action of a chunk its own reward and value).
Estimators are of two kinds: the per-step ``gae`` and ``reinforce_pp`` read the rewards; every other registered
name is an episode estimator ``fn(scores [B], group_ids [B]) -> [B]``, its value broadcast over the episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlarl.algorithms.advantages import gae, get_advantage, normalize, reinforce_pp
from vlarl.rollout.schema import Batch, decision_major, env_major


@dataclass
class RLSteps:
    """A batch as S RL steps per episode, every field ``[S, B]``; ``unflatten`` maps ``[S, B]`` back to the
    batch's ``[T, B, U]`` (U = 1 per decision, U = K per env step)."""

    reward: torch.Tensor
    value: torch.Tensor
    next_value: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor
    gamma: torch.Tensor
    units: int

    def unflatten(self, x: torch.Tensor) -> torch.Tensor:
        return decision_major(x, self.units)


def estimator_name(algo: Any) -> str:
    """``algo.advantage``, or the algorithm's own: ``gae`` for PPO, ``grpo`` for GRPO."""
    return algo.advantage or ("gae" if algo.name == "ppo" else "grpo")


def rl_steps(batch: Batch, algo: Any) -> RLSteps:
    """The RL steps of ``batch`` at ``algo.reward_granularity``.

    ``chunk``: one step per decision, reward summed over its env steps, value ``value[..., 0]``, next value the
    one after its last env step, discount ``algo.gamma`` per decision or, with ``algo.discount_unit ==
    "env_step"``, gamma^(env steps it ran). ``action``: one step per env step (``env_major``), discount
    ``algo.gamma`` per env step; an episode's end flags sit at the env step where it ended.
    """
    valid, k = batch.valid, batch.reward.shape[-1]
    if algo.reward_granularity == "action":
        last = valid & (torch.arange(k) == batch.steps.unsqueeze(-1) - 1)  # the env step where a decision ended
        return RLSteps(
            env_major(batch.reward),
            env_major(batch.value),
            env_major(batch.next_value),
            env_major(last & batch.terminated.unsqueeze(-1)),
            env_major(last & batch.truncated.unsqueeze(-1)),
            env_major(valid),
            torch.full((batch.reward.shape[0] * k, batch.reward.shape[1]), float(algo.gamma)),
            k,
        )
    last = (batch.steps - 1).clamp(min=0).unsqueeze(-1)
    if algo.discount_unit == "env_step":
        gamma = algo.gamma ** batch.steps.float()
    else:
        gamma = torch.full(batch.mask.shape, float(algo.gamma))
    return RLSteps(
        batch.reward.sum(-1),
        batch.value[..., 0],
        batch.next_value.gather(-1, last).squeeze(-1),
        batch.terminated,
        batch.truncated,
        batch.mask,
        gamma,
        1,
    )


def episode_scores(steps: RLSteps, success: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-episode scores ``[B]``: ``success`` (0/1), ``return`` (the discounted sum of the RL steps' rewards:
    under sparse reward an earlier success scores more) or ``max_reward`` (the best step reward: under shaped
    rewards, how close it came)."""
    if kind == "success":
        return success.float()
    if kind == "return":
        gamma = steps.gamma
        discount = torch.cumprod(torch.cat([torch.ones_like(gamma[:1]), gamma[:-1]]), dim=0)  # prod_{u<t} gamma_u
        return (steps.reward * steps.mask * discount).sum(0)
    if kind == "max_reward":
        return steps.reward.masked_fill(~steps.mask, -torch.inf).amax(0)
    raise ValueError(f"episode score {kind!r}; choose success, return or max_reward")


def advantages(batch: Batch, algo: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets ``[T, B, U]`` (U = 1 at chunk granularity, K at action granularity), zero
    at the steps of no episode.

    Episode estimators rank ``episode_scores(..., algo.score)``; without a critic the targets are the rollout
    values (unused).
    ``algo.step_weight == "episode"`` scales each episode's steps by mean length / its length, so an episode
    weighs the same however many steps it ran (failures run to the step limit); ``algo.neg_adv_weight`` scales
    negative advantages.
    """
    name = estimator_name(algo)
    steps = rl_steps(batch, algo)
    ret = steps.value
    if name == "gae":
        adv, ret = gae(
            steps.reward, steps.value, steps.next_value, steps.terminated, steps.truncated, steps.gamma, algo.lam
        )
        if algo.norm_adv:
            adv = normalize(adv, steps.mask)
    elif name == "reinforce_pp":  # per-step return-to-go, whitened over the batch: no critic
        adv = reinforce_pp(steps.reward, steps.terminated, steps.truncated, steps.gamma, mask=steps.mask)
    else:
        scores = episode_scores(steps, batch.success, algo.score)
        extra = {"normalize_std": algo.group_std} if name == "grpo" else {}
        adv = get_advantage(name)(scores, batch.group_id, **extra).unsqueeze(0).expand_as(steps.value)
    if algo.step_weight == "episode":
        count = steps.mask.sum(0).clamp(min=1).float()
        adv = adv * (count.mean() / count)
    if algo.neg_adv_weight != 1.0:
        adv = torch.where(adv < 0, adv * algo.neg_adv_weight, adv)
    mask = steps.mask
    return steps.unflatten(torch.where(mask, adv, 0.0)), steps.unflatten(torch.where(mask, ret, 0.0))
