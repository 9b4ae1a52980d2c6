"""``SubprocVectorEnv``: the envs of ``SyncVectorEnv`` spread over worker processes.

Each worker runs a ``SyncVectorEnv`` over a contiguous slice of env indices and writes its
observations (and final observations) into shared-memory arrays; only rewards, flags and small
info arrays travel through the pipe. One message per worker per ``step_chunk``: a worker runs
all K actions of its envs before answering. A worker that dies is restarted; its envs start new
episodes and report ``truncated`` with ``info["worker_restarted"]`` set (see ``base``).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

import numpy as np

from vlarl.envs.base import OBS_KEYS, EnvSpec, StepFromChunk, SyncVectorEnv, process_rss_mb
from vlarl.utils.threads import apply_thread_plan, worker_environ

_SHM_KEYS = OBS_KEYS + tuple(f"final_{k}" for k in OBS_KEYS)


def _views(buffers: dict[str, Any], shapes: dict[str, tuple], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    return {k: np.frombuffer(buffers[k], dtype=dtypes[k]).reshape(shapes[k]) for k in buffers}


def _worker(conn, cfg, env_ids, buffers, shapes, dtypes) -> None:
    apply_thread_plan("env_worker")  # the variables came with the spawn (worker_environ); this covers torch
    from vlarl.envs import make_backend

    lo, hi = env_ids[0], env_ids[-1] + 1
    shared = _views(buffers, shapes, dtypes)
    venv = None
    while True:
        try:
            cmd, payload = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if cmd == "close":
            break
        try:
            if venv is None:
                venv = SyncVectorEnv(make_backend(cfg), cfg, env_ids)
            if cmd == "reset":
                obs = venv.reset(*payload)
                reply = None
            else:
                obs, reward, term, trunc, info = venv.step_chunk(payload)
                for k in OBS_KEYS:
                    shared[f"final_{k}"][lo:hi] = info.pop(f"final_{k}")
                reply = (reward, term, trunc, info)
            for k in OBS_KEYS:
                shared[k][lo:hi] = obs[k]
            answer = ("ok", (obs["instruction"], reply))
        except Exception:  # report to the driver, keep serving
            answer = ("error", traceback.format_exc())
        try:
            conn.send(answer)
        except (BrokenPipeError, ConnectionResetError):  # the driver is gone (killed): nobody to answer
            break
    if venv is not None:
        venv.close()
    conn.close()


class SubprocVectorEnv(StepFromChunk):
    """Same API and results as ``SyncVectorEnv`` for the same seeds (see ``vlarl.envs.base``)."""

    def __init__(self, cfg: Any, spec: EnvSpec):
        self.cfg = cfg
        self.spec = spec
        n = cfg.num_envs
        self.slices = [list(map(int, s)) for s in np.array_split(np.arange(n), min(cfg.num_workers, n))]
        one = {
            "image": (self.spec.image_shape, "uint8"),
            "proprio": ((self.spec.proprio_dim,), "float32"),
            "state": ((self.spec.state_dim,), "float32"),
        }
        self._shapes = {k: (n, *one[k.removeprefix("final_")][0]) for k in _SHM_KEYS}
        self._dtypes = {k: one[k.removeprefix("final_")][1] for k in _SHM_KEYS}
        self._ctx = mp.get_context("spawn")
        self._buffers = {
            k: self._ctx.RawArray("B", int(np.prod(self._shapes[k])) * np.dtype(self._dtypes[k]).itemsize)
            for k in _SHM_KEYS
        }
        self._shared = _views(self._buffers, self._shapes, self._dtypes)
        self._procs: list[Any] = [None] * len(self.slices)
        self._conns: list[Any] = [None] * len(self.slices)
        for w in range(len(self.slices)):
            self._start(w)
        self._instructions = [""] * n
        self._last_reset: tuple[int | None, dict | None] = (None, None)
        self.restarts = 0

    def _start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker,
            args=(child, self.cfg, self.slices[w], self._buffers, self._shapes, self._dtypes),
            daemon=True,
        )
        with worker_environ():  # the child's OpenMP/BLAS read their thread variables as they load
            proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent

    def _restart(self, w: int) -> None:
        """Replace a dead worker and start fresh episodes on its envs."""
        self.restarts += 1
        self._procs[w].kill()
        self._procs[w].join(timeout=5)
        self._start(w)
        seed = self._last_reset[0]
        self._conns[w].send(("reset", (None if seed is None else seed + 1_000_003 * self.restarts, None)))
        self._receive(w)

    def _receive(self, w: int) -> Any:
        status, payload = self._conns[w].recv()
        if status == "error":
            raise RuntimeError(f"env worker {w} (envs {self.slices[w]}) failed:\n{payload}")
        instructions, reply = payload
        lo = self.slices[w][0]
        self._instructions[lo : lo + len(instructions)] = instructions
        return reply

    def _obs(self) -> dict[str, Any]:
        obs = {k: self._shared[k].copy() for k in OBS_KEYS}
        obs["instruction"] = list(self._instructions)
        return obs

    def _slice_options(self, options: dict | None, w: int) -> dict | None:
        if not options:
            return options
        ids = self.slices[w]
        return {k: (None if v is None else [v[i] for i in ids]) for k, v in options.items()}

    def reset(self, seed: int | None = None, options: dict | None = None) -> dict[str, Any]:
        if options:
            for key, value in options.items():
                if value is not None and len(value) != self.spec.num_envs:
                    raise ValueError(f"reset option {key!r} must hold one entry per env ({self.spec.num_envs})")
        self._last_reset = (seed, options)
        for w in range(len(self.slices)):
            self._conns[w].send(("reset", (seed, self._slice_options(options, w))))
        for w in range(len(self.slices)):
            self._receive(w)
        return self._obs()

    def step_chunk(self, actions: np.ndarray):
        actions = np.asarray(actions)
        n = self.spec.num_envs
        if actions.ndim != 3 or actions.shape[0] != n:
            raise ValueError(f"step_chunk expects actions [B={n}, K, A], got shape {actions.shape}")
        k_len = actions.shape[1]
        sent = []
        for w, ids in enumerate(self.slices):
            try:
                self._conns[w].send(("step", actions[ids[0] : ids[-1] + 1]))
                sent.append(True)
            except (BrokenPipeError, ConnectionError, OSError):
                sent.append(False)
        replies, restarted = [], np.zeros(n, bool)
        for w, ids in enumerate(self.slices):
            try:
                if not sent[w]:
                    raise EOFError
                replies.append(self._receive(w))
            except (EOFError, ConnectionError, OSError):
                lo, hi = ids[0], ids[-1] + 1
                for k in OBS_KEYS:  # the last observation seen is the final one of the cut episode
                    self._shared[f"final_{k}"][lo:hi] = self._shared[k][lo:hi]
                self._restart(w)
                restarted[lo:hi] = True
                task_index = [self.spec.tasks.index(self.spec.env_tasks[i]) for i in ids]
                replies.append(_restart_reply(np.array(task_index), k_len))
        reward, term, trunc = (np.concatenate([r[i] for r in replies]) for i in range(3))
        info = {key: np.concatenate([r[3][key] for r in replies]) for key in replies[0][3]}
        info.update({f"final_{k}": self._shared[f"final_{k}"].copy() for k in OBS_KEYS})
        info["worker_restarted"] = restarted
        return self._obs(), reward, term, trunc, info

    def rss_mb(self) -> dict[str, Any]:
        """Resident memory (MB): ``{"driver": this process, "workers": [one per worker process]}``."""
        return {"driver": process_rss_mb(), "workers": [process_rss_mb(proc.pid) for proc in self._procs]}

    def close(self) -> None:
        for w, conn in enumerate(self._conns):
            if conn is None:
                continue
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            self._procs[w].join(timeout=10)
            if self._procs[w].is_alive():
                self._procs[w].kill()
            conn.close()
        self._conns = []

    def __del__(self) -> None:
        if getattr(self, "_conns", None):
            self.close()


def _restart_reply(task_index: np.ndarray, k_len: int) -> tuple:
    """Rewards and flags of envs whose worker died: the episode is cut (truncated) at index 0."""
    n = len(task_index)
    trunc = np.zeros((n, k_len), bool)
    trunc[:, 0] = True
    valid = np.zeros((n, k_len), bool)
    info = {
        "success": np.zeros(n, bool),
        "episode_success": np.zeros(n, bool),
        "episode_length": np.zeros(n, np.int64),
        "task_index": task_index,
        "valid": valid,
    }
    return np.zeros((n, k_len), np.float32), np.zeros((n, k_len), bool), trunc, info
