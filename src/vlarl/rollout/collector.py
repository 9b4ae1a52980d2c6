"""Serial episode collection: B envs, one policy call per chunk-step, one episode per env per call.

Each call resets every env (with per-env initial-state seeds: GRPO groups share one) and steps
until every env's episode has ended (success, or the step limit). A decision's K actions run
open-loop in ``venv.step_chunk``; an episode that ends inside a chunk ends there. Steps after an
env's episode ended are discarded (``mask`` is false there). The result is one ``Batch`` with
leading dims ``[T, B]`` (T = the longest episode, in chunk-steps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vlarl.policies.base import GREEDY, SAMPLE, Sampling, VLAPolicy
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
    where rollouts may run behind the learner).
    """
    b = venv.spec.num_envs
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    obs = venv.reset(seed=seed, options={"task": list(tasks), "init_seed": list(init_seeds)})
    instruction = list(obs["instruction"])
    images, proprios = [], []
    steps: dict[str, list] = {k: [] for k in _PER_STEP}
    alive = np.ones(b, bool)
    success = np.zeros(b, bool)
    for _ in range(math.ceil(max_steps / policy.chunk_len)):
        out = policy.act(obs, sampling, generator)
        images.append(obs["image"])
        proprios.append(obs["proprio"])
        obs, reward, term, trunc, info = venv.step_chunk(out.actions)
        ran = torch.as_tensor(info["valid"] & alive[:, None])  # [B, K] the env steps of live episodes
        term, trunc = term.any(1) & alive, trunc.any(1) & alive
        cut_value = torch.zeros(ran.shape)
        if trunc.any():  # bootstrap from the value of the last observation of a cut episode, at its last step
            final = {"image": info["final_image"], "proprio": info["final_proprio"], "instruction": instruction}
            rows = torch.as_tensor(trunc.nonzero()[0])
            cut_value[rows, ran.sum(1)[rows] - 1] = _values(policy, final, trunc)
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
            steps[key].append(val)
        ended = term | trunc  # both are already limited to live episodes
        success[ended] = info["episode_success"][ended]
        alive &= ~ended
        if not alive.any():
            break
    if alive.any():  # the step budget ran out before the env's own limit: cut there, bootstrap from obs
        steps["truncated"][-1] = steps["truncated"][-1] | torch.as_tensor(alive)
        rows = torch.as_tensor(alive.nonzero()[0])
        steps["cut_value"][-1][rows, steps["steps"][-1][rows] - 1] = _values(policy, obs, alive)
    out = {k: torch.stack(v) for k, v in steps.items()}
    out["next_value"] = next_values(out["value"], out["steps"], out.pop("cut_value"))
    return Batch(
        image=np.stack(images),
        proprio=np.stack(proprios),
        instruction=instruction,
        **out,
        policy_version=torch.full(out["mask"].shape, policy_version, dtype=torch.int64),
        group_id=torch.as_tensor(group_id, dtype=torch.int64),
        task=list(tasks),
        success=torch.as_tensor(success),
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


def _values(policy: Any, obs: dict[str, Any], rows: np.ndarray) -> torch.Tensor:
    """V of the observation rows where ``rows`` is true ``[N]`` (the value before a chunk's first step; greedy
    decode for first-action value heads)."""
    value = policy.act(gather_obs(obs, rows), GREEDY).value
    return torch.zeros(int(rows.sum())) if value is None else value[:, 0].float().cpu()
