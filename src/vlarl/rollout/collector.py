"""Serial episode collection: B envs, one policy call per step, one episode per env per call.

Each call resets every env (with per-env initial-state seeds: GRPO groups share one) and steps
until every env's episode has ended (success, or the step limit). Steps after an env's episode
ended are discarded (``mask`` is false there). The result is one ``Batch`` with leading dims
``[T, B]`` (T = the longest episode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlarl.policies.base import GREEDY, SAMPLE, Sampling, VLAPolicy

_STEP_FIELDS = ("tokens", "logprob", "value", "next_value", "reward", "terminated", "truncated", "mask")


@dataclass
class Batch:
    """A rollout, time-major. Shapes: T steps, B envs, A action dims, V/H/W image dims."""

    image: np.ndarray  # uint8 [T, B, V, H, W, 3], the observation the action was chosen from
    proprio: np.ndarray  # float32 [T, B, P]
    instruction: list[str]  # [B] (fixed within an episode)
    tokens: torch.Tensor  # int64 [T, B, A]
    logprob: torch.Tensor  # float32 [T, B, A], per token, at sampling time
    value: torch.Tensor  # float32 [T, B]
    next_value: torch.Tensor  # float32 [T, B], V(s_{t+1}): value[t+1] inside an episode, V(final obs) where
    #                           truncated, 0 where terminated and on steps outside the episode (mask false)
    reward: torch.Tensor  # float32 [T, B]
    terminated: torch.Tensor  # bool [T, B]
    truncated: torch.Tensor  # bool [T, B]
    mask: torch.Tensor  # bool [T, B], the step belongs to the env's episode
    group_id: torch.Tensor  # int64 [B], envs with the same id share task and initial state
    task: list[str]  # [B]
    success: torch.Tensor  # bool [B], the episode succeeded
    length: torch.Tensor  # int64 [B]
    stats: dict[str, float] = field(default_factory=dict)  # collection-wide figures, e.g. success before filtering

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())

    def observation(self, t: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
        """The observations of steps ``(t[i], b[i])`` (int tensors ``[N]``) as a policy input dict of N rows."""
        ti, bi = t.numpy(), b.numpy()
        return {
            "image": self.image[ti, bi],
            "proprio": self.proprio[ti, bi],
            "instruction": [self.instruction[i] for i in bi],
        }

    def select(self, cols: list[int]) -> Batch:
        """The episodes ``cols`` (env columns) of this batch."""
        idx = torch.as_tensor(cols, dtype=torch.long)
        return Batch(
            image=self.image[:, cols],
            proprio=self.proprio[:, cols],
            instruction=[self.instruction[c] for c in cols],
            **{k: getattr(self, k)[:, idx] for k in _STEP_FIELDS},
            group_id=self.group_id[idx],
            task=[self.task[c] for c in cols],
            success=self.success[idx],
            length=self.length[idx],
        )


def collect_episodes(
    policy: VLAPolicy,
    venv: Any,
    tasks: list[str],
    init_seeds: list[int],
    group_id: list[int],
    seed: int,
    max_steps: int,
    sampling: Sampling = SAMPLE,
) -> Batch:
    """Run one episode per env (``tasks``/``init_seeds`` per env), actions drawn by ``policy.act`` with ``sampling``."""
    b = venv.spec.num_envs
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    obs = venv.reset(seed=seed, options={"task": list(tasks), "init_seed": list(init_seeds)})
    instruction = list(obs["instruction"])
    steps: dict[str, list] = {
        k: []
        for k in (
            "image",
            "proprio",
            "tokens",
            "logprob",
            "value",
            "cut_value",
            "reward",
            "terminated",
            "truncated",
            "mask",
        )
    }
    alive = np.ones(b, bool)
    success = np.zeros(b, bool)
    length = np.zeros(b, np.int64)
    for _ in range(max_steps):
        out = policy.act(obs, sampling, generator)
        steps["image"].append(obs["image"])
        steps["proprio"].append(obs["proprio"])
        obs, reward, term, trunc, info = venv.step(out.actions)
        trunc = trunc & alive
        term = term & alive
        cut_value = torch.zeros(b)
        if trunc.any():  # bootstrap from the value of the last observation of a cut episode
            final = {"image": info["final_image"], "proprio": info["final_proprio"], "instruction": instruction}
            cut_value[trunc] = _values(policy, final, trunc)
        for key, val in (
            ("tokens", out.tokens.cpu()),
            ("logprob", out.logprob.float().cpu()),
            ("value", out.value.float().cpu()),
            ("cut_value", cut_value),
            ("reward", torch.as_tensor(reward, dtype=torch.float32)),
            ("terminated", torch.as_tensor(term)),
            ("truncated", torch.as_tensor(trunc)),
            ("mask", torch.as_tensor(alive.copy())),
        ):
            steps[key].append(val)
        ended = (term | trunc) & alive
        success[ended] = info["episode_success"][ended]
        length[alive] += 1
        alive &= ~ended
        if not alive.any():
            break
    if alive.any():  # the step budget ran out before the env's own limit: cut there, bootstrap from obs
        steps["truncated"][-1] = steps["truncated"][-1] | torch.as_tensor(alive)
        steps["cut_value"][-1][alive] = _values(policy, obs, alive)
    out = {k: torch.stack(steps[k]) for k in _STEP_FIELDS if k != "next_value"}
    out["next_value"] = next_values(out["value"], out["mask"], torch.stack(steps["cut_value"]))
    return Batch(
        image=np.stack(steps["image"]),
        proprio=np.stack(steps["proprio"]),
        instruction=instruction,
        **out,
        group_id=torch.as_tensor(group_id),
        task=list(tasks),
        success=torch.as_tensor(success),
        length=torch.as_tensor(length),
    )


def next_values(value: torch.Tensor, mask: torch.Tensor, cut_value: torch.Tensor) -> torch.Tensor:
    """V(s_{t+1}) per step ``[T, B]``: ``value[t+1]`` where the episode goes on (``mask[t+1]``), else ``cut_value[t]``.

    ``cut_value`` holds V(final observation) at truncated steps and 0 elsewhere, so a terminated step and the
    steps after an episode's end get 0. Auto-reset puts the next episode's first value in ``value[t+1]`` after
    an end, which is why ``mask[t+1]`` (not just ``t + 1 < T``) decides.
    """
    following = torch.zeros_like(value)
    following[:-1] = torch.where(mask[1:], value[1:], 0.0)
    return torch.where(mask, following + cut_value, 0.0)


def _values(policy: Any, obs: dict[str, Any], rows: np.ndarray) -> torch.Tensor:
    """V of the observation rows where ``rows`` is true (greedy decode for first-action value heads)."""
    sub = {
        "image": obs["image"][rows],
        "proprio": obs["proprio"][rows],
        "instruction": [t for t, r in zip(obs["instruction"], rows) if r],
    }
    return policy.act(sub, GREEDY).value.float().cpu()


def concat_batches(batches: list[Batch]) -> Batch:
    """Episodes of several batches side by side (``[T_max, sum B]``; padding steps have mask false)."""
    batches = [b for b in batches if b.success.numel()]
    if not batches:
        raise ValueError("no episodes to concatenate")
    if len(batches) == 1:
        return batches[0]
    t_max = max(b.mask.shape[0] for b in batches)

    def pad(x, t):
        if isinstance(x, np.ndarray):
            return np.concatenate([x, np.zeros((t - x.shape[0], *x.shape[1:]), x.dtype)]) if t > x.shape[0] else x
        return torch.cat([x, torch.zeros((t - x.shape[0], *x.shape[1:]), dtype=x.dtype)]) if t > x.shape[0] else x

    return Batch(
        image=np.concatenate([pad(b.image, t_max) for b in batches], axis=1),
        proprio=np.concatenate([pad(b.proprio, t_max) for b in batches], axis=1),
        instruction=[i for b in batches for i in b.instruction],
        **{k: torch.cat([pad(getattr(b, k), t_max) for b in batches], dim=1) for k in _STEP_FIELDS},
        group_id=torch.cat([b.group_id for b in batches]),
        task=[t for b in batches for t in b.task],
        success=torch.cat([b.success for b in batches]),
        length=torch.cat([b.length for b in batches]),
    )
