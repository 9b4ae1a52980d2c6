"""The thread plan: how many torch/OpenMP/BLAS threads each process of a run uses.

A run on C cores (``os.sched_getaffinity``) has one policy process (the driver: forward passes, updates)
and ``env.num_workers`` env-worker processes (MuJoCo stepping and software rendering):

- ``env_worker``: 1 thread (also a Ray env worker of a placement, ``vlarl.distributed``);
- ``rollout``: a placement's inference worker: its CPU share, ``placement.rollout_cpus`` (at least 1);
- ``learner_rank``: a learner-group rank's ``placement.learner_cpus``;
- ``policy``: ``run.threads``, or C minus the env workers that compute while it does (at least 1). The serial
  drivers step the envs and run the policy in turn (a waiting worker sleeps on its pipe), so there the policy
  takes every core: on 2 cores with 2 workers an SFT step ran 0.60/s with 1 thread, 1.0/s with 2 PASSIVE threads;
- both: ``OMP_WAIT_POLICY=PASSIVE``, so an OpenMP thread with no work sleeps instead of spinning on a core;
  ``LP_NUM_THREADS`` for Mesa's software renderer (llvmpipe): a 1-thread process rasterises in its own thread
  (0: no raster threads), a process of n threads with n of them (llvmpipe's default is one per core). Measured by
  ``benchmarks/raster_threads.py``: 64 px MetaWorld frames with simplified meshes 1.13x faster at 0, full ones 1.02x.

Why (2-core machine, nothing set): a 256x256 MLP forward/backward loop ran 1,400 steps/s alone with torch's
default 2 threads but 116 beside one busy single-threaded process (every parallel region waits for the
thread parked behind the neighbour), and 823 there with 1 thread, 763 with 2 threads and PASSIVE.

When each setting takes effect:

- ``torch.set_num_threads``: at any time (called when torch is imported already; a torch imported later
  starts with ``OMP_NUM_THREADS`` threads).
- ``torch.set_num_interop_threads``: once per process, before any inter-op work; later calls are skipped.
- ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``LP_NUM_THREADS``:
  read once, as the library initialises (libgomp and MKL with ``import torch``, OpenBLAS with ``import numpy``,
  llvmpipe as the first GL context is made). Set later,
  they only reach child processes (measured: PASSIVE set just after ``import torch`` ran like the default,
  31-57 steps/s, where set before it gave 724, under foreign load). So the CLI applies the plan before it
  imports torch or numpy, and env workers get them in the environment they are spawned with
  (``worker_environ`` around ``Process.start``); ``apply_thread_plan("env_worker")`` at the worker's entry
  then covers torch, should the worker import it (Ray actors get the variables from their ``runtime_env``
  and call ``apply_thread_plan`` as they start). A library caller that imported torch already gets the
  thread counts but not the wait policy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ROLES = ("policy", "env_worker", "rollout", "learner_rank")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "LP_NUM_THREADS")


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan_threads(role: str, env_workers: int = 0, requested: int = 0, cores: int | None = None) -> int:
    """Threads of a process in ``role``: 1 for an env worker; ``requested`` (at least 1) for a rollout worker;
    ``requested``, or ``cores - env_workers`` (at least 1), for the policy process."""
    if role not in ROLES:
        raise ValueError(f"unknown thread-plan role {role!r}; choose one of {', '.join(ROLES)}")
    if requested < 0:
        raise ValueError(f"run.threads={requested} must be >= 0 (0: the machine's cores minus the env workers)")
    if role == "env_worker":
        return 1
    if role in ("rollout", "learner_rank"):
        return max(1, requested)
    if requested:
        return requested
    return max(1, (machine_cores() if cores is None else cores) - env_workers)


def thread_env(threads: int) -> dict[str, str]:
    """The environment variables of a process with ``threads`` threads."""
    n = str(threads)
    raster = "0" if threads == 1 else n  # llvmpipe: 0 draws in the calling thread
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "OMP_WAIT_POLICY": "PASSIVE",
        "LP_NUM_THREADS": raster,
    }


def apply_thread_plan(role: str, cfg: Any = None, concurrent_workers: int = 0) -> int:
    """Set this process's threads for ``role``; returns their number.

    ``cfg``: a command config: ``run.threads`` for the policy role, ``placement.rollout_cpus`` (whole CPUs) for
    the rollout role, ``placement.learner_cpus`` for a learner rank. ``concurrent_workers``: env workers that
    compute while the policy does (a pipelined placement); 0 for the serial drivers.
    Sets the variables of ``thread_env`` in ``os.environ`` (see the module docstring for when they act)
    and, when torch is imported already, its intra- and inter-op threads (a torch imported later reads
    ``OMP_NUM_THREADS``).
    """
    if role == "rollout":
        requested = int(cfg.placement.rollout_cpus)
    elif role == "learner_rank":
        requested = cfg.placement.learner_cpus
    else:
        requested = getattr(getattr(cfg, "run", None), "threads", 0)
    threads = plan_threads(role, concurrent_workers if role == "policy" else 0, requested)
    os.environ.update(thread_env(threads))
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # set already, or inter-op work has started
            pass
    return threads


@contextmanager
def worker_environ() -> Iterator[None]:
    """``os.environ`` holds the env-worker plan inside: processes spawned there start with it."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update(thread_env(plan_threads("env_worker")))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
