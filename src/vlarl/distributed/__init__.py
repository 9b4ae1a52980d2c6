"""Placements on Ray: of the rollout (``placement.mode`` collocated | disaggregated | hybrid; serial needs none),
and of the learner (``learner_group.LearnerGroup``, ``placement.learner_ranks`` FSDP2 or DDP ranks).

``place(cfg)`` connects to Ray (a quiet local instance, or ``placement.ray_address``), checks the placement
against the cluster and starts the env workers; it returns them (the trainer's vector env: ``spec``,
``rss_mb``, ``close``) and the placed collector (``collect_episodes``'s signature; ``sync_weights``, ``close``).
Importing this package does not import Ray; ``place`` does.
"""

from __future__ import annotations

from typing import Any


def place(cfg: Any, policy_cfg: Any) -> tuple[Any, Any]:
    """``(EnvWorkers, PlacedCollector)`` of a train config whose ``placement.mode`` is not serial; the rollout
    worker builds its policy from ``policy_cfg`` (the learner's, with its start checkpoint)."""
    import ray

    from vlarl.distributed.collector import EnvWorkers, PlacedCollector
    from vlarl.distributed.placement import cluster_check, make_plan, start_ray

    plan = make_plan(cfg.placement, cfg.env.num_envs)
    owns_ray = start_ray(cfg.placement)
    try:
        cluster_check(cfg.placement)
        venv = EnvWorkers(cfg, plan)
        return venv, PlacedCollector(cfg, plan, owns_ray, policy_cfg, (venv.spec.action_dim, venv.spec.proprio_dim))
    except BaseException:
        if owns_ray:
            ray.shutdown()
        raise


__all__ = ["place"]
