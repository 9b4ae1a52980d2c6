"""The thread plan: its numbers, and that spawned processes (env workers) really start with it."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vlarl.envs.base import EnvSpec
from vlarl.envs.subproc import SubprocVectorEnv
from vlarl.utils.threads import apply_thread_plan, machine_cores, plan_threads, thread_env, worker_environ


def _cfg(threads=0, num_workers=2, num_envs=8):
    return SimpleNamespace(
        run=SimpleNamespace(threads=threads), env=SimpleNamespace(num_workers=num_workers, num_envs=num_envs)
    )


def test_plan_numbers():
    assert plan_threads("env_worker", env_workers=5, requested=4, cores=16) == 1
    assert plan_threads("policy", env_workers=2, cores=8) == 6
    assert plan_threads("policy", env_workers=1, cores=2) == 1
    assert plan_threads("policy", env_workers=3, cores=2) == 1  # at least one
    assert plan_threads("policy", env_workers=0, cores=2) == 2
    assert plan_threads("policy", env_workers=2, requested=3, cores=8) == 3
    assert plan_threads("policy") == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="policy, env_worker"):
        plan_threads("learner")
    with pytest.raises(ValueError, match="run.threads"):
        plan_threads("policy", requested=-1)


def test_thread_env():
    assert thread_env(3) == {
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
        "OPENBLAS_NUM_THREADS": "3",
        "OMP_WAIT_POLICY": "PASSIVE",
        "LP_NUM_THREADS": "3",
    }
    assert thread_env(1)["LP_NUM_THREADS"] == "0"  # a 1-thread process: llvmpipe draws in that thread


def _apply_in_child(queue) -> None:
    """Torch is imported before the plan (as in library use); report what each role leaves set."""
    import torch

    out = {"default": torch.get_num_threads()}
    out["worker"] = (apply_thread_plan("env_worker"), torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"])
    out["serial"] = apply_thread_plan("policy", _cfg(num_workers=2))  # workers wait while the policy runs
    out["pipelined"] = apply_thread_plan("policy", _cfg(num_workers=2), concurrent_workers=1)
    policy = apply_thread_plan("policy", _cfg(threads=3))
    out["policy"] = (policy, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"])
    queue.put(out)


def _report_threads(queue) -> None:
    import torch

    queue.put((torch.get_num_threads(), {k: os.environ.get(k) for k in thread_env(1)}))


def _run_child(target) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue,))
    proc.start()
    out = queue.get(timeout=120)
    proc.join(timeout=30)
    return out


def test_apply_sets_torch_threads_and_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the child's torch starts with 2 threads
    out = _run_child(_apply_in_child)
    assert out["default"] == 2
    assert out["worker"] == (1, 1, "PASSIVE")
    assert out["policy"] == (3, 3, "3", "3")
    cores = machine_cores()
    assert out["serial"] == cores and out["pipelined"] == max(1, cores - 1)


def test_worker_environ_reaches_a_spawned_process_and_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with worker_environ():
        proc = ctx.Process(target=_report_threads, args=(queue,))
        proc.start()
    torch_threads, env = queue.get(timeout=120)
    proc.join(timeout=30)
    assert torch_threads == 1
    assert env == thread_env(1)
    assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def _exec_environ(pid: int, timeout: float = 60.0) -> dict[str, str]:
    """The environment process ``pid`` was exec'd with, once it runs multiprocessing's spawn entry."""
    deadline = time.monotonic() + timeout
    while b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes():  # before exec: a copy of ours
        assert time.monotonic() < deadline, f"process {pid} did not exec the spawn entry"
        time.sleep(0.05)
    items = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def test_env_workers_are_spawned_with_the_plan(monkeypatch):
    """The environment a real ``SubprocVectorEnv`` worker was exec'd with (/proc/<pid>/environ)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cfg = SimpleNamespace(num_envs=2, num_workers=2)
    spec = EnvSpec(num_envs=2, action_dim=4, proprio_dim=4, state_dim=39, num_views=0, image_size=16, tasks=("t",))
    venv = SubprocVectorEnv(cfg, spec)  # the workers wait for a first command before building any env
    try:
        for proc in venv._procs:
            env = _exec_environ(proc.pid)
            assert {k: env.get(k, "") for k in thread_env(1)} == thread_env(1)
        rss = venv.rss_mb()
        assert len(rss["workers"]) == 2 and all(np.isfinite(r) and r > 0 for r in rss["workers"])
    finally:
        venv.close()
    assert os.environ["OMP_NUM_THREADS"] == "2"
