"""Serial episode collection: B envs, one policy call per chunk-step, one episode per env per call.

Each call resets every env (with per-env initial-state seeds: GRPO groups share one) and steps
until every env's episode has ended (success, or the step limit). A decision's K actions run
open-loop in ``venv.step_chunk``; an episode that ends inside a chunk ends there. Steps after an
env's episode ended are discarded (``mask`` is false there). The result is one ``Batch`` with
leading dims ``[T, B]`` (T = the longest episode, in chunk-steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vlarl.policies.base import GREEDY, SAMPLE, ActOutput, EnvGenerators, Sampling, VLAPolicy
from vlarl.rollout.schema import Batch, decision_major, env_major, gather_obs, ran_steps

_PER_STEP = (
    "action_tokens",
    "actions",
    "chain",
    "denoise_step",
    "logprob",
    "value",
    "cut_value",
    "reward",
    "terminated",
    "truncated",
    "mask",
    "steps",
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
    policy_version: int = 0,
) -> Batch:
    """Run one episode per env (``tasks``/``init_seeds`` per env), actions drawn by ``policy.act`` with ``sampling``.

    ``max_steps`` counts env steps; ``policy_version`` tags every step (the weights' version in a placement
    where rollouts may run behind the learner). Decision t of env b draws from its own stream
    (``EnvGenerators(seed, b, t)``), so a placement that batches the envs differently draws the same.
    """
    b = venv.spec.num_envs
    obs = venv.reset(seed=seed, options={"task": list(tasks), "init_seed": list(init_seeds)})
    recorder = EpisodeRecorder(obs, lambda rows: state_values(policy, rows))
    for t in range(decisions(max_steps, policy.chunk_len)):
        out = policy.act(obs, sampling, EnvGenerators(seed, range(b), t))
        obs, *result = venv.step_chunk(out.actions)
        if not recorder.add(out, obs, *result):
            break
    return recorder.batch(tasks, group_id, policy_version)


def decisions(max_steps: int, chunk_len: int) -> int:
    """Policy decisions an episode of at most ``max_steps`` env steps takes at most."""
    return math.ceil(max_steps / chunk_len)


class EpisodeRecorder:
    """What a collection keeps of each decision of B envs and the ``Batch`` it makes of them: the serial loop's
    bookkeeping, fed the same pieces by the placed collectors (``vlarl.distributed``).

    ``obs`` is the reset observation; ``values(obs_rows) -> [N]`` gives V of observation rows (the bootstrap of
    episodes cut by a step limit).
    """

    def __init__(self, obs: dict[str, Any], values: Callable[[dict[str, Any]], torch.Tensor]):
        self.obs, self.values = obs, values
        self.instruction = list(obs["instruction"])
        self.images, self.proprios = [], []
        self.steps: dict[str, list] = {k: [] for k in _PER_STEP}
        b = len(self.instruction)
        self.alive = np.ones(b, bool)
        self.success = np.zeros(b, bool)

    def add(self, out: ActOutput, obs: dict[str, Any], reward, term, trunc, info: dict[str, Any]) -> bool:
        """Record one decision: the policy's ``out`` for the current observation and what ``venv.step_chunk``
        returned for its actions (``obs`` the next observation, ``reward``/``term``/``trunc`` ``[B, K]``);
        returns whether any env's episode goes on."""
        b, alive = len(self.alive), self.alive
        self.images.append(self.obs["image"])
        self.proprios.append(self.obs["proprio"])
        ran = torch.as_tensor(info["valid"] & alive[:, None])  # [B, K] the env steps of live episodes
        term, trunc = term.any(1) & alive, trunc.any(1) & alive
        cut_value = torch.zeros(ran.shape)
        if trunc.any():  # bootstrap from the value of the last observation of a cut episode, at its last step
            final = {"image": info["final_image"], "proprio": info["final_proprio"], "instruction": self.instruction}
            rows = torch.as_tensor(trunc.nonzero()[0])
            cut_value[rows, ran.sum(1)[rows] - 1] = self.values(gather_obs(final, trunc))
        value = torch.zeros(ran.shape) if out.value is None else out.value.float().cpu()
        for key, val in (
            ("action_tokens", out.tokens.cpu()),
            ("actions", torch.as_tensor(out.actions, dtype=torch.float32)),
            ("chain", torch.zeros(b, 0, *out.tokens.shape[1:]) if out.chain is None else out.chain.cpu()),
            ("denoise_step", torch.full((b,), -1) if out.denoise_step is None else out.denoise_step.cpu()),
            ("logprob", out.logprob.float().cpu()),
            ("value", value),
            ("cut_value", cut_value),
            ("reward", torch.as_tensor(reward, dtype=torch.float32) * ran),
            ("terminated", torch.as_tensor(term)),
            ("truncated", torch.as_tensor(trunc)),
            ("mask", torch.as_tensor(alive.copy())),
            ("steps", ran.sum(1)),
        ):
            self.steps[key].append(val)
        ended = term | trunc  # both are already limited to live episodes
        self.success[ended] = info["episode_success"][ended]
        alive &= ~ended
        self.obs = obs
        return bool(alive.any())

    def batch(self, tasks: list[str], group_id: list[int], policy_version: int) -> Batch:
        """The ``Batch`` of the decisions recorded; episodes still running are cut at the last one."""
        steps, alive = self.steps, self.alive
        if alive.any():  # the step budget ran out before the env's own limit: cut there, bootstrap from obs
            steps["truncated"][-1] = steps["truncated"][-1] | torch.as_tensor(alive)
            rows = torch.as_tensor(alive.nonzero()[0])
            steps["cut_value"][-1][rows, steps["steps"][-1][rows] - 1] = self.values(gather_obs(self.obs, alive))
        out = {k: torch.stack(v) for k, v in steps.items()}
        out["next_value"] = next_values(out["value"], out["steps"], out.pop("cut_value"))
        return Batch(
            image=np.stack(self.images),
            proprio=np.stack(self.proprios),
            instruction=self.instruction,
            **out,
            policy_version=torch.full(out["mask"].shape, policy_version, dtype=torch.int64),
            group_id=torch.as_tensor(group_id, dtype=torch.int64),
            task=list(tasks),
            success=torch.as_tensor(self.success),
        )


def next_values(value: torch.Tensor, steps: torch.Tensor, cut_value: torch.Tensor) -> torch.Tensor:
    """V after each env step ``[T, B, K]``: in env-step order (``env_major``), the next step's ``value`` where the
    episode goes on, else ``cut_value``.

    ``value`` ``[T, B, K]`` holds V before each env step of a chunk, ``steps`` ``[T, B]`` the env steps each chunk
    ran, ``cut_value`` ``[T, B, K]`` V(final observation) at the step where an episode was truncated and 0
    elsewhere; so a terminated step and the steps not run get 0. Auto-reset puts the next episode's first value
    after an end, which is why the next step's validity (not just its existence) decides.
    """
    k = value.shape[-1]
    ran = env_major(ran_steps(steps, k))
    v = env_major(value)
    following = torch.zeros_like(v)
    following[:-1] = torch.where(ran[1:], v[1:], 0.0)
    return decision_major(torch.where(ran, following + env_major(cut_value), 0.0), k)


def state_values(policy: Any, obs: dict[str, Any]) -> torch.Tensor:
    """V of every observation row ``[N]`` (the value before a chunk's first step; greedy decode for first-action
    value heads)."""
    value = policy.act(obs, GREEDY).value
    return torch.zeros(len(obs["instruction"])) if value is None else value[:, 0].float().cpu()
