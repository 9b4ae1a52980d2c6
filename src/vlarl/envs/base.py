"""The vector-env contract and its in-process implementation.

Shapes (B envs, K actions per chunk, A action dims, V cameras, P proprio dims, S state dims):

- ``reset(seed=None, options=None) -> obs``
- ``step(actions [B, A]) -> obs, reward [B], terminated [B], truncated [B], info``
- ``step_chunk(actions [B, K, A]) -> obs, reward [B, K], terminated [B, K], truncated [B, K], info``
- ``rss_mb() -> {"driver": MB, "workers": [MB per worker process]}`` (resident memory)

``obs`` is a dict: ``image`` uint8 ``[B, V, H, W, 3]`` (upright), ``proprio`` float32 ``[B, P]``,
``state`` float32 ``[B, S]`` (privileged simulator state, for scripted experts and critics; a policy
must not read it) and ``instruction`` ``list[str]`` of length B.

Actions are float in [-1, 1] (values outside are clipped).

**Auto-reset (same step).** When an env's episode ends (terminated or truncated) the env is reset
at once: the returned ``obs`` row is the first observation of the next episode, and the last
observation of the finished one is in ``info["final_image"|"final_proprio"|"final_state"]`` (rows
are only meaningful where the episode ended). ``terminated`` means a true end (success when
``terminate_on_success``), so a value-based learner must not bootstrap from it; ``truncated``
means the step limit was hit (or the worker crashed and was restarted), where one bootstraps from
the final observation. The two are never both true.

**Chunks.** ``step_chunk`` runs the K actions of each env in order. An env whose episode ends at
chunk index k stops there: actions k+1.. are ignored, ``reward[b, k+1:] = 0``,
``info["valid"][b, k+1:] = False``, and the flags are set at index k only. Only the observations it
returns are read from the simulator (``SingleEnv.observe``): a chunk of K actions renders one frame
per camera, not K, where the backend renders on demand (MetaWorld, toy).

Every step's ``info`` has ``success`` ``[B]`` (the simulator's success signal at any executed
step of this call), ``episode_success`` / ``episode_length`` ``[B]`` (valid where the episode
ended), ``task_index`` ``[B]`` (into ``spec.tasks``) and ``valid`` ``[B, K]`` (chunks only).

**Seeding.** ``reset(seed=s)`` gives env b the generator ``default_rng([s, b])``: results depend on
the seed and the env's index only, not on how envs are spread over worker processes.
``options`` may hold, as lists of B entries (None = not set for that env): ``task`` (task names),
``init_state`` (indices into the task's fixed evaluation set) and ``init_seed`` (draw the initial
state from ``default_rng(init_seed)``: envs given the same seed and task start identically, as
GRPO groups need). They apply to this reset only; later auto-resets draw random initial states of
the env's current task from the env's own generator.
"""

from __future__ import annotations

import ctypes
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """What a policy needs to know about a vector env."""

    num_envs: int
    action_dim: int
    proprio_dim: int
    state_dim: int
    num_views: int
    image_size: int
    tasks: tuple[str, ...]
    instructions: dict[str, str] = field(default_factory=dict)
    max_episode_steps: int = 0

    @property
    def env_tasks(self) -> tuple[str, ...]:
        """The task each env index runs until a reset option changes it: ``tasks[b % len(tasks)]``."""
        return tuple(self.tasks[b % len(self.tasks)] for b in range(self.num_envs))

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        return (self.num_views, self.image_size, self.image_size, 3)


def eval_rng(cfg: Any, task: str) -> np.random.Generator:
    """The generator of ``task``'s evaluation initial states: seeded by (``cfg.eval_seed``, task), the same in every
    process and apart from the training draws (seeded by (seed, env index))."""
    return np.random.default_rng([cfg.eval_seed, zlib.crc32(task.encode())])


def config_spec(cfg: Any, num_envs: int, dims: tuple[int, int, int], instructions: dict[str, str]) -> EnvSpec:
    """The ``EnvSpec`` of an ``EnvConfig``: ``dims`` = (action, proprio, state); ``instructions`` per task, in order."""
    action_dim, proprio_dim, state_dim = dims
    return EnvSpec(
        num_envs=num_envs,
        action_dim=action_dim,
        proprio_dim=proprio_dim,
        state_dim=state_dim,
        num_views=len(cfg.cameras),
        image_size=cfg.image_size,
        tasks=tuple(instructions),
        instructions=dict(instructions),
        max_episode_steps=cfg.max_episode_steps,
    )


@runtime_checkable
class VectorEnv(Protocol):
    spec: EnvSpec

    def reset(self, seed: int | None = None, options: dict | None = None) -> dict[str, Any]: ...

    def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]: ...

    def step_chunk(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]: ...

    def close(self) -> None: ...

    def rss_mb(self) -> dict[str, Any]: ...


class SingleEnv(Protocol):
    """One simulator instance of one task; what a backend implements."""

    instruction: str

    init_state: np.ndarray | None  # the initial-state vector of the current episode

    def reset(self, init_state: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Start an episode from ``init_state`` (None: draw one from ``rng``).

        Returns image [V,H,W,3] uint8, proprio [P] float32, state [S] float32.
        """

    def step(self, action: np.ndarray) -> tuple[float, bool]:
        """Apply ``action [A]``; returns (reward, success). The new observation is read with ``observe``."""

    def observe(self) -> dict[str, np.ndarray]:
        """The current observation, as ``reset`` returns it; renders the cameras (if the simulator did not
        while stepping), so a vector env calls it only for the observations a policy or learner reads."""

    def close(self) -> None: ...


class Backend(Protocol):
    """A simulator family: builds single envs and knows its task sets."""

    def make_env(self, task: str) -> SingleEnv: ...

    def eval_init_states(self, task: str) -> np.ndarray:
        """The fixed, seeded evaluation initial states of ``task``: ``[N, D]``."""

    def spec(self, num_envs: int) -> EnvSpec: ...


OBS_KEYS = ("image", "proprio", "state")
RESET_OPTIONS = ("task", "init_state", "init_seed")


def process_rss_mb(pid: int | str = "self") -> float:
    """Resident memory (MB) of process ``pid`` from ``/proc/<pid>/status``; nan where unreadable (exited, not Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc only): closed simulators leave fragmented holes that
    kept worker RSS ~40% above its live size under task churn."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


class StepFromChunk:
    """``step`` as a one-action ``step_chunk`` (shared by the vector env implementations)."""

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions)
        if actions.ndim != 2:
            raise ValueError(f"step expects actions [B, A], got shape {actions.shape}")
        obs, reward, term, trunc, info = self.step_chunk(actions[:, None])
        info.pop("valid")
        return obs, reward[:, 0], term[:, 0], trunc[:, 0], info


class SyncVectorEnv(StepFromChunk):
    """B single envs stepped in this process; env b runs task ``tasks[b % len(tasks)]``.

    ``env_ids`` are the global indices of these envs (a worker process holds a slice), used for
    seeding and task assignment so that any split gives the same results.
    """

    def __init__(self, backend: Backend, cfg: Any, env_ids: list[int] | None = None):
        self.cfg = cfg
        self.backend = backend
        self.spec = backend.spec(cfg.num_envs)
        self.env_ids = list(range(cfg.num_envs)) if env_ids is None else list(env_ids)
        self.task = [self.spec.env_tasks[i] for i in self.env_ids]
        # One simulator per env slot (a rendering one holds a MuJoCo GL context: ~80 MB). In a reset, a
        # slot that changes task parks its simulator in the idle pool of that task, where the next slot
        # changing to it picks it up; the ones no slot needs are closed, so memory stays one per slot.
        self._envs: list[SingleEnv | None] = [None] * len(self.env_ids)
        self._env_task: list[str | None] = [None] * len(self.env_ids)
        self._idle: dict[str, list[SingleEnv]] = {}
        self._rng = [np.random.default_rng([0, i]) for i in self.env_ids]
        self._t = np.zeros(len(self.env_ids), dtype=np.int64)
        self._ever_success = np.zeros(len(self.env_ids), dtype=bool)
        self._obs: list[dict[str, np.ndarray]] = [{} for _ in self.env_ids]

    def _release(self, b: int) -> None:
        if self._envs[b] is not None and self._env_task[b] != self.task[b]:
            self._idle.setdefault(self._env_task[b], []).append(self._envs[b])
            self._envs[b] = None

    def _env(self, b: int) -> SingleEnv:
        """Slot b's simulator; ``reset`` (the only place a task changes) has parked a stale one."""
        if self._envs[b] is None:
            idle = self._idle.get(self.task[b])
            self._envs[b] = idle.pop() if idle else self.backend.make_env(self.task[b])
            self._env_task[b] = self.task[b]
        return self._envs[b]

    def _reset_one(self, b: int, init_index: int | None = None, init_seed: int | None = None) -> None:
        init_state = None if init_index is None else self.backend.eval_init_states(self.task[b])[init_index]
        rng = self._rng[b] if init_seed is None else np.random.default_rng(init_seed)
        self._obs[b] = self._env(b).reset(init_state, rng)
        self._t[b] = 0
        self._ever_success[b] = False

    def _batch(self) -> dict[str, Any]:
        obs = {k: np.stack([o[k] for o in self._obs]) for k in OBS_KEYS}
        obs["instruction"] = [self._env(b).instruction for b in range(len(self.env_ids))]
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None) -> dict[str, Any]:
        options = options or {}
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: {list(RESET_OPTIONS)}")
        n = len(self.env_ids)
        if seed is not None:
            self._rng = [np.random.default_rng([seed, i]) for i in self.env_ids]
        tasks, inits, seeds = (options.get(k) or [None] * n for k in RESET_OPTIONS)
        if not len(tasks) == len(inits) == len(seeds) == n:
            raise ValueError(f"reset options must hold one entry per env ({n})")
        for b in range(n):
            if tasks[b] is not None:
                if tasks[b] not in self.spec.tasks:
                    raise ValueError(f"unknown task {tasks[b]!r}; tasks of this env: {list(self.spec.tasks)}")
                self.task[b] = tasks[b]
            self._release(b)  # all slots changing task park their simulators before any picks one up
        # close the parked simulators no slot will take before building new ones (kept, they piled up to one
        # per slot and task; closed later, the peak would be two per slot)
        need = Counter(self.task[b] for b in range(n) if self._envs[b] is None)
        spare = [env for task, idle in self._idle.items() for env in idle[need[task] :]]
        self._idle = {task: idle[: need[task]] for task, idle in self._idle.items()}
        for env in spare:
            env.close()
        if spare:
            _trim_heap()
        for b in range(n):
            self._reset_one(b, inits[b], seeds[b])
        return self._batch()

    def step_chunk(self, actions: np.ndarray):
        if not self._obs[0]:
            raise RuntimeError("call reset() before step()/step_chunk()")
        actions = np.asarray(actions, dtype=np.float64)
        n, a = len(self.env_ids), self.spec.action_dim
        if actions.ndim != 3 or actions.shape[0] != n or actions.shape[2] != a:
            raise ValueError(f"step_chunk expects actions [B={n}, K, A={a}], got shape {actions.shape}")
        actions = np.clip(actions, -1.0, 1.0)
        k_len = actions.shape[1]
        reward = np.zeros((n, k_len), np.float32)
        term = np.zeros((n, k_len), bool)
        trunc = np.zeros((n, k_len), bool)
        valid = np.zeros((n, k_len), bool)
        success = np.zeros(n, bool)
        ep_success = np.zeros(n, bool)
        ep_length = np.zeros(n, np.int64)
        final = {key: np.zeros((n, *self._obs[0][key].shape), self._obs[0][key].dtype) for key in OBS_KEYS}
        for b in range(n):
            env = self._env(b)
            for k in range(k_len):
                r, succ = env.step(actions[b, k])
                self._t[b] += 1
                valid[b, k] = True
                reward[b, k] = r
                success[b] |= succ
                self._ever_success[b] |= succ
                term[b, k] = succ and self.cfg.terminate_on_success
                trunc[b, k] = not term[b, k] and self._t[b] >= self.cfg.max_episode_steps
                if term[b, k] or trunc[b, k]:
                    last = env.observe()
                    for key in OBS_KEYS:
                        final[key][b] = last[key]
                    ep_success[b], ep_length[b] = self._ever_success[b], self._t[b]
                    self._reset_one(b)
                    break
            else:
                self._obs[b] = env.observe()
        info = {
            "success": success,
            "episode_success": ep_success,
            "episode_length": ep_length,
            "task_index": np.array([self.spec.tasks.index(t) for t in self.task]),
            "valid": valid,
            **{f"final_{key}": final[key] for key in OBS_KEYS},
        }
        return self._batch(), reward, term, trunc, info

    def rss_mb(self) -> dict[str, Any]:
        """Resident memory (MB): ``{"driver": this process, "workers": []}`` (the envs live in this process)."""
        return {"driver": process_rss_mb(), "workers": []}

    def close(self) -> None:
        for env in [*self._envs, *(e for idle in self._idle.values() for e in idle)]:
            if env is not None:
                env.close()
        self._envs, self._idle = [None] * len(self.env_ids), {}
        self._env_task = [None] * len(self.env_ids)
