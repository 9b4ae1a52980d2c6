"""The placed collector: ``collect_episodes``'s signature and result, with the envs in Ray env workers and the
policy in a rollout worker, scheduled as the plan's inference groups (``placement.py``).

Decision t of group g is ``act`` on the rollout worker, from the observations its pieces' env steps of decision
t - 1 returned, then each piece's ``step`` on its env worker. Ray hands each result on as it is ready (ObjectRefs,
no driver round trip), so while a worker steps one piece the rollout worker infers for the next group. The
driver submits decision t + 1 before it reads decision t (no bubble at decision boundaries) and records decision
t with the serial ``EpisodeRecorder``; when every episode has ended it stops and waits out the decision it ran
ahead, whose results it drops (the next reset re-seeds every env). Each env draws from ``EnvGenerators(seed, env,
t)``, as in ``collect_episodes``, so the batch is serial's whatever the grouping.

An env worker that dies (killed, crashed) is restarted, every env worker is replayed to the state after the last
recorded decision (the call's reset, then the recorded actions: the envs are deterministic given them), and the
decisions not recorded are submitted again: no transition is lost or duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from vlarl.distributed.placement import Plan, actor_options
from vlarl.distributed.workers import EnvWorker, RolloutWorker, concat
from vlarl.envs import make_backend
from vlarl.envs.base import process_rss_mb
from vlarl.policies.base import SAMPLE, ActOutput, Sampling, VLAPolicy
from vlarl.rollout.collector import EpisodeRecorder, decisions
from vlarl.rollout.schema import Batch

MAX_RECOVERIES = 3  # env-worker deaths survived per collection
START_TIMEOUT_S = 300


def wait_started(refs: list[Any], what: str) -> None:
    """Wait for the first calls of newly started actors; a clear error when Ray cannot place them."""
    try:
        ray.get(refs, timeout=START_TIMEOUT_S)
    except GetTimeoutError:
        raise RuntimeError(
            f"{what} did not start in {START_TIMEOUT_S} s: the Ray cluster has not the CPUs/GPUs it asks for free "
            f"(available now: {ray.available_resources()}; do other actors hold the rest?)"
        ) from None


class EnvWorkers:
    """The env workers of a plan, seen from the driver: the ``spec`` and memory of a vector env, each piece's reset
    and step as ObjectRefs, and the restart of dead workers."""

    def __init__(self, cfg: Any, plan: Plan):
        self.cfg, self.plan = cfg, plan
        self.spec = make_backend(cfg.env).spec(cfg.env.num_envs)
        self._actor = ray.remote(EnvWorker).options(**actor_options(cfg.placement, "env_worker"))
        self.actors = [self._start(w) for w in range(plan.workers)]
        wait_started([actor.rss_mb.remote() for actor in self.actors], "the env workers")
        self.restarts = 0

    def _start(self, w: int) -> Any:
        return self._actor.remote(self.cfg.env, [self.plan.pieces[p] for p in self.plan.worker_pieces(w)])

    def _options(self, options: dict[str, list], w: int) -> list[dict[str, list]]:
        """Worker w's reset options, one dict per stage."""
        return [
            {k: [v[i] for i in self.plan.pieces[p]] for k, v in options.items()} for p in self.plan.worker_pieces(w)
        ]

    def _per_piece(self, refs: Any) -> list[Any]:
        return [refs] if self.plan.stages == 1 else list(refs)

    def reset(self, seed: int, options: dict[str, list]) -> list[Any]:
        """Reset every env (``options`` hold one entry per env); returns each piece's observation ref."""
        stages = self.plan.stages
        return [
            ref
            for w, actor in enumerate(self.actors)
            for ref in self._per_piece(actor.reset.options(num_returns=stages).remote(seed, self._options(options, w)))
        ]

    def step(self, piece: int, actions: Any) -> tuple[Any, Any]:
        """Step one piece by ``actions`` (a ref to ``[n, K, A]``): refs to its ``obs`` and ``(reward, term, trunc,
        info)``."""
        w, stage = divmod(piece, self.plan.stages)
        return tuple(self.actors[w].step.options(num_returns=2).remote(stage, actions))

    def _alive(self, actor: Any) -> bool:
        try:
            ray.get(actor.rss_mb.remote(), timeout=60)
            return True
        except RayActorError:
            return False

    def recover(self, seed: int, options: dict[str, list], history: list[np.ndarray]) -> list[Any] | None:
        """Restart the dead workers and replay every worker through the reset and ``history`` (each decision's
        actions ``[B, K, A]``); returns each piece's observation ref, or None when no worker had died."""
        dead = [w for w, actor in enumerate(self.actors) if not self._alive(actor)]
        if not dead:
            return None
        for w in dead:
            self.actors[w] = self._start(w)
            self.restarts += 1
        wait_started([self.actors[w].rss_mb.remote() for w in dead], "a restarted env worker")
        refs = []
        for w, actor in enumerate(self.actors):
            pieces = self.plan.worker_pieces(w)
            chunks = [[h[self.plan.pieces[p][0] : self.plan.pieces[p][-1] + 1] for h in history] for p in pieces]
            replay = actor.replay.options(num_returns=self.plan.stages).remote(seed, self._options(options, w), chunks)
            refs += self._per_piece(replay)
        return refs

    def rss_mb(self) -> dict[str, Any]:
        """Resident memory (MB): ``{"driver": this process, "workers": [one per env worker]}``."""
        return {"driver": process_rss_mb(), "workers": ray.get([a.rss_mb.remote() for a in self.actors])}

    def close(self) -> None:
        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except RayError:
                pass
            ray.kill(actor)
        self.actors = []


@dataclass
class Decision:
    """The refs of one submitted decision: each group's policy output and each piece's step."""

    records: list[Any]
    steps: list[tuple[Any, Any]]

    def refs(self) -> list[Any]:
        return [*self.records, *(r for step in self.steps for r in step)]


class PlacedCollector:
    """``collect_episodes`` over ``EnvWorkers`` and a rollout worker (see the module docstring); ``sync_weights``
    publishes the learner's weights to the rollout worker, which starts with the first (its policy built from
    ``policy_cfg`` for ``dims`` = (action, proprio) dims, as the trainer builds the learner's)."""

    def __init__(self, cfg: Any, plan: Plan, owns_ray: bool, policy_cfg: Any, dims: tuple[int, int]):
        self.cfg, self.plan, self.owns_ray = cfg, plan, owns_ray
        self.policy_cfg, self.dims = policy_cfg, dims
        self.rollout: Any = None
        self.version: int | None = None
        group_envs = np.concatenate([self._envs(group) for group in plan.groups])
        self._order = np.argsort(group_envs)  # group-major rows -> env order

    def _envs(self, group: list[int]) -> list[int]:
        return [e for p in group for e in self.plan.pieces[p]]

    def sync_weights(self, policy: VLAPolicy, version: int) -> None:
        """Give the rollout worker the learner's weights (``policy.state_dict``) as ``version``; the first call starts
        the worker."""
        state = ray.put({k: v.detach().cpu() for k, v in policy.state_dict().items()})
        if self.rollout is None:
            actor = ray.remote(RolloutWorker).options(**actor_options(self.cfg.placement, "rollout"))
            self.rollout = actor.remote(self.cfg, self.policy_cfg, self.dims, state, version)
            wait_started([self.rollout.info.remote()], "the rollout worker")
        else:
            ray.get(self.rollout.load_weights.remote(state, version))
        self.version = version

    def _submit(self, venv: EnvWorkers, t: int, obs: list[Any], seed: int, sampling: Sampling) -> Decision:
        """Decision ``t`` of every group, from each piece's observation ref ``obs``."""
        records, steps = [], [None] * len(self.plan.pieces)
        for group in self.plan.groups:
            sizes = [len(self.plan.pieces[p]) for p in group]
            act = self.rollout.act.options(num_returns=1 + len(group))
            record, *actions = act.remote(seed, self._envs(group), t, sampling, sizes, *(obs[p] for p in group))
            records.append(record)
            for p, piece_actions in zip(group, actions):
                steps[p] = venv.step(p, piece_actions)
        return Decision(records, steps)

    def _fetch(self, decision: Decision) -> tuple[ActOutput, dict, tuple]:
        """A decision's policy output, next observation and step result, all B envs in env order."""
        outs = ray.get(decision.records)
        stepped = ray.get([r for step in decision.steps for r in step])
        obs, results = stepped[0::2], stepped[1::2]
        order = torch.as_tensor(self._order)

        def rows(name: str) -> Any:
            parts = [getattr(o, name) for o in outs]
            if parts[0] is None:
                return None
            return np.concatenate(parts)[self._order] if isinstance(parts[0], np.ndarray) else torch.cat(parts)[order]

        out = ActOutput(
            rows("actions"), rows("tokens"), rows("logprob"), rows("value"), {}, rows("chain"), rows("denoise_step")
        )
        reward, term, trunc = (np.concatenate([r[i] for r in results]) for i in range(3))
        return out, concat(obs), (reward, term, trunc, concat([r[3] for r in results]))

    @staticmethod
    def _drain(pending: dict[int, Decision]) -> None:
        """Wait for submitted decisions whose results are dropped (so no actor still works on them)."""
        refs = [r for decision in pending.values() for r in decision.refs()]
        ray.wait(refs, num_returns=len(refs), timeout=600)
        for ref in refs:
            try:
                ray.get(ref, timeout=0)
            except RayError:
                pass
        pending.clear()

    @staticmethod
    def _recover(error: RayError, venv: EnvWorkers, seed: int, options: dict, history: list, tries: int) -> list[Any]:
        """Each piece's observation ref after restarting dead env workers and replaying ``history``; re-raises
        ``error`` when no env worker had died (the rollout worker, or a bug) or after ``MAX_RECOVERIES``."""
        obs = venv.recover(seed, options, history) if tries < MAX_RECOVERIES else None
        if obs is None:
            raise error
        return obs

    def _values(self, obs: dict[str, Any]) -> torch.Tensor:
        return ray.get(self.rollout.values.remote(obs))

    def __call__(
        self,
        policy: VLAPolicy,
        venv: EnvWorkers,
        tasks: list[str],
        init_seeds: list[int],
        group_id: list[int],
        seed: int,
        max_steps: int,
        sampling: Sampling = SAMPLE,
        policy_version: int = 0,
    ) -> Batch:
        """``collect_episodes`` on the placement; syncs the rollout worker first if its weights are not of
        ``policy_version``."""
        if self.version != policy_version:
            self.sync_weights(policy, policy_version)
        options = {"task": list(tasks), "init_seed": list(init_seeds)}
        n = decisions(max_steps, policy.chunk_len)
        history: list[np.ndarray] = []  # each recorded decision's actions [B, K, A], for a replay
        t, recoveries = 0, 0
        obs = venv.reset(seed, options)
        try:
            first = ray.get(obs)
        except RayError as error:  # a worker died since the last collection
            obs = self._recover(error, venv, seed, options, history, recoveries)
            recoveries, first = 1, ray.get(obs)
        recorder = EpisodeRecorder(concat(first), self._values)
        pending: dict[int, Decision] = {}
        while True:
            for d in (t, t + 1):  # decision t and, run ahead, t + 1
                if d < n and d not in pending:
                    pending[d] = self._submit(venv, d, obs, seed, sampling)
                    obs = [step[0] for step in pending[d].steps]
            try:
                out, next_obs, result = self._fetch(pending[t])
            except RayError as error:
                self._drain(pending)
                obs = self._recover(error, venv, seed, options, history, recoveries)
                recoveries += 1
                continue
            del pending[t]
            history.append(out.actions)
            if not recorder.add(out, next_obs, *result) or t + 1 == n:
                break
            t += 1
        self._drain(pending)
        return recorder.batch(tasks, group_id, policy_version)

    def close(self) -> None:
        """Stop the rollout worker, and the Ray session if this process started it."""
        if self.rollout is not None:
            ray.kill(self.rollout)
            self.rollout = None
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False
