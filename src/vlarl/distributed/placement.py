"""The placement plan: which envs each env worker steps, which envs each inference call serves, what each actor
asks of Ray; and the Ray session (local and quiet, or joined).

The B envs are laid out in order: env worker w of W steps envs ``[w B/W, (w+1) B/W)``, split into S stage slices
of ``B/(W S)`` envs. A *piece* is one (worker, stage) slice, numbered ``p = w S + s``; an inference *group* is the
pieces one ``act`` call serves:

- ``collocated``: one group of every piece, the serial loop's one batched call per decision (the workers and the
  rollout worker share the CPUs and take turns);
- ``disaggregated``: one group per worker: the policy infers for worker w while the other workers step;
- ``hybrid``: one group per stage, across workers: the policy infers for stage s while the simulators step stage
  s - 1 (RLinf's fine-grained pipeline).

Ray's CPU accounting: collocated actors ask for no CPUs (they take turns on the same ones); in the other modes
every env worker asks for ``env_cpus`` and the rollout worker for ``rollout_cpus`` (disjoint shares).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from vlarl.utils.threads import machine_cores, plan_threads, thread_env

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass(frozen=True)
class Plan:
    """The layout of one placement (see the module docstring); env ids are global indices."""

    mode: str
    pieces: list[list[int]]  # env ids of piece p = w * stages + s
    stages: int
    groups: list[list[int]]  # piece indices each act call serves

    @property
    def workers(self) -> int:
        return len(self.pieces) // self.stages

    def worker_pieces(self, w: int) -> list[int]:
        return list(range(w * self.stages, (w + 1) * self.stages))


def make_plan(placement: Any, num_envs: int) -> Plan:
    """The plan of a ``PlacementConfig`` (validated by ``config.loader``) for ``num_envs`` envs."""
    workers, stages = placement.env_workers, placement.pipeline_stages
    size = num_envs // (workers * stages)
    pieces = [list(range(p * size, (p + 1) * size)) for p in range(workers * stages)]
    if placement.mode == "collocated":
        groups = [list(range(len(pieces)))]
    elif placement.mode == "disaggregated":
        groups = [[w] for w in range(workers)]
    else:
        groups = [[w * stages + s for w in range(workers)] for s in range(stages)]
    return Plan(placement.mode, pieces, stages, groups)


def cpu_requests(placement: Any) -> tuple[float, float]:
    """Ray CPUs asked by each env worker and by the rollout worker (0 when collocated: they take turns)."""
    if placement.mode == "collocated":
        return 0.0, 0.0
    return placement.env_cpus, placement.rollout_cpus


def check_resources(placement: Any, cpus: float, gpus: float) -> None:
    """Raise ``ValueError`` when the placement asks for more than the Ray cluster has (``cpus``, ``gpus``)."""
    env = placement.env_workers * placement.env_cpus
    shares = f"placement.env_workers={placement.env_workers} x env_cpus={placement.env_cpus:g}"
    if placement.mode == "serial":
        need, how = 0.0, "serial rollouts"
    elif placement.mode == "collocated":
        need, how = max(env, placement.rollout_cpus), f"max({shares}, rollout_cpus={placement.rollout_cpus:g})"
    else:
        need, how = env + placement.rollout_cpus, f"{shares} + rollout_cpus={placement.rollout_cpus:g}"
    if placement.learner_ranks > 1:  # the ranks hold their CPUs for the whole run
        need += placement.learner_ranks * placement.learner_cpus
        how += f" + learner_ranks={placement.learner_ranks} x learner_cpus={placement.learner_cpus}"
    if need > cpus:
        raise ValueError(
            f"placement {placement.mode!r} asks for {need:g} CPUs ({how}) but the Ray cluster has {cpus:g}; "
            "use fewer env workers, smaller shares or a larger cluster (placement.num_cpus, placement.ray_address)"
        )
    if placement.rollout_gpus > gpus:
        raise ValueError(
            f"placement.rollout_gpus={placement.rollout_gpus:g} but the Ray cluster has {gpus:g} GPUs; "
            "set placement.rollout_gpus=0 to infer on CPU"
        )


def current_node() -> str:
    """The Ray node id of the calling actor (or driver)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def node_labels(items: list[str]) -> dict[str, Any]:
    """``ray.remote`` options that keep an actor on nodes with every ``key=value`` label (none: any node)."""
    return {"label_selector": dict(item.split("=", 1) for item in items)} if items else {}


def actor_options(placement: Any, role: str) -> dict[str, Any]:
    """``ray.remote`` options of an env worker (``role="env_worker"``) or the rollout worker (``"rollout"``):
    its CPU/GPU request, its node labels and the thread variables of the plan in its environment from the start."""
    env_cpus, rollout_cpus = cpu_requests(placement)
    if role == "env_worker":
        threads, options = plan_threads("env_worker"), {"num_cpus": env_cpus} | node_labels(placement.env_nodes)
    else:
        threads = plan_threads("rollout", requested=int(placement.rollout_cpus))
        options = {"num_cpus": rollout_cpus, "num_gpus": placement.rollout_gpus} | node_labels(placement.rollout_nodes)
    return options | {"runtime_env": {"env_vars": thread_env(threads)}}


def start_ray(placement: Any) -> bool:
    """Connect to Ray: an initialised session as is; ``placement.ray_address`` joins a cluster; else a local
    instance on ``placement.num_cpus`` (0: this machine's cores) with no dashboard and no auth token. Returns
    whether this call started the session (then ``ray.shutdown`` is this process's to call; Ray also calls it at
    exit)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": LOG_LEVELS[placement.log_level], "namespace": "vlarl"}
    if placement.ray_address:
        ray.init(address=placement.ray_address, **quiet)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray 2.60 makes and announces a token
        ray.init(num_cpus=placement.num_cpus or machine_cores(), include_dashboard=False, **quiet)
    return True


def cluster_check(placement: Any) -> None:
    """``check_resources`` against the connected Ray cluster's totals."""
    import ray

    total = ray.cluster_resources()
    check_resources(placement, total.get("CPU", 0.0), total.get("GPU", 0.0))
