"""The Ray actors of a placement: ``EnvWorker`` (a slice of the envs, one ``SyncVectorEnv`` per pipeline stage)
and ``RolloutWorker`` (a copy of the policy: batched ``act`` for the envs it serves, versioned weights).

Both are plain classes, made actors by ``ray.remote(...)`` where they are started (``collector.py``); each calls
the thread plan as it starts. Observations and steps keep ``VectorEnv``'s shapes (``vlarl.envs.base``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from vlarl.distributed.placement import current_node
from vlarl.envs import make_backend
from vlarl.envs.base import SyncVectorEnv, process_rss_mb
from vlarl.policies import make_policy
from vlarl.policies.base import ActOutput, EnvGenerators, Sampling
from vlarl.rollout.collector import state_values
from vlarl.utils.threads import apply_thread_plan


def concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Dicts of per-env rows (arrays ``[n_i, ...]``, lists of n_i) side by side, in order."""
    out = {}
    for key, first in parts[0].items():
        if isinstance(first, list):
            out[key] = [x for p in parts for x in p[key]]
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


class EnvWorker:
    """The envs of one worker: stage s is a ``SyncVectorEnv`` over the global env ids ``pieces[s]``."""

    def __init__(self, env_cfg: Any, pieces: list[list[int]]):
        apply_thread_plan("env_worker")
        backend = make_backend(env_cfg)
        self.stages = [SyncVectorEnv(backend, env_cfg, ids) for ids in pieces]

    def _per_stage(self, values: list[Any]) -> Any:
        """One return value per stage (Ray's ``num_returns``: a single one unwrapped)."""
        return values[0] if len(values) == 1 else tuple(values)

    def reset(self, seed: int, options: list[dict]) -> Any:
        """Reset every stage (``options[s]``: its envs' reset options); returns each stage's observation."""
        return self._per_stage([env.reset(seed=seed, options=o) for env, o in zip(self.stages, options)])

    def step(self, stage: int, actions: np.ndarray) -> tuple[dict, tuple]:
        """``step_chunk(actions [n, K, A])`` of one stage: ``obs`` and ``(reward, terminated, truncated, info)``."""
        obs, *rest = self.stages[stage].step_chunk(actions)
        return obs, tuple(rest)

    def replay(self, seed: int, options: list[dict], actions: list[list[np.ndarray]]) -> Any:
        """Reset as ``reset`` did, then step each stage through ``actions[s]`` (its chunks in order): the state a
        restarted worker resumes from (the envs are deterministic given seed and actions). Returns each stage's
        observation."""
        obs = []
        for env, chunks, o in zip(self.stages, actions, options):
            last = env.reset(seed=seed, options=o)
            for chunk in chunks:
                last = env.step_chunk(chunk)[0]
            obs.append(last)
        return self._per_stage(obs)

    def rss_mb(self) -> float:
        return process_rss_mb()

    def node(self) -> str:
        return current_node()

    def close(self) -> None:
        for env in self.stages:
            env.close()


class RolloutWorker:
    """A copy of the policy, in eval mode on its own device; ``version`` is the learner iteration of its weights.

    Built as the trainer builds its policy (``make_policy`` of ``policy_cfg``, the same architecture and LoRA
    wrapping; its checkpoint folder must be readable here), then given the learner's ``state``.
    """

    def __init__(self, cfg: Any, policy_cfg: Any, dims: tuple[int, int], state: dict, version: int):
        apply_thread_plan("rollout", cfg)
        device = "cuda" if cfg.placement.rollout_gpus > 0 else "cpu"
        self.policy = make_policy(dataclasses.replace(policy_cfg, device=device), *dims).eval()
        self.version = self.load_weights(state, version)

    def load_weights(self, state: dict[str, torch.Tensor], version: int) -> int:
        self.policy.load_state_dict(state)
        self.version = version
        return version

    def act(
        self, seed: int, env_ids: list[int], decision: int, sampling: Sampling, sizes: list[int], *obs: dict
    ) -> tuple:
        """One decision for the envs ``env_ids`` whose observations are the pieces ``obs`` (of ``sizes`` envs):
        the policy's output (CPU tensors, without model inputs) then each piece's actions ``[n, K, A]``."""
        out = self.policy.act(concat(list(obs)), sampling, EnvGenerators(seed, env_ids, decision))
        record = ActOutput(
            actions=out.actions,
            tokens=out.tokens.cpu(),
            logprob=out.logprob.cpu(),
            value=None if out.value is None else out.value.cpu(),
            inputs={},
            chain=None if out.chain is None else out.chain.cpu(),
            denoise_step=None if out.denoise_step is None else out.denoise_step.cpu(),
        )
        return (record, *np.split(out.actions, np.cumsum(sizes)[:-1]))

    def values(self, obs: dict[str, Any]) -> torch.Tensor:
        """V of every observation row ``[N]`` (``rollout.collector.state_values``)."""
        return state_values(self.policy, concat([obs]))  # a writable copy of what Ray hands over read-only

    def info(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rss_mb": process_rss_mb(),
            "threads": torch.get_num_threads(),
            "node": current_node(),
        }
