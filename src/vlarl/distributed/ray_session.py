"""The Ray session of a run: a quiet local cluster (no dashboard, no token-auth prompt) or the cluster at
``placement.ray_address``; shut down at exit."""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any


def start_ray(cfg: Any) -> None:
    """``ray.init`` once per process, from ``cfg.placement`` (``ray_address``, ``ray_log_level``)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray >= 2.5x turns token auth on for new local clusters
    placement = cfg.placement
    level = getattr(logging, placement.ray_log_level.upper())
    if placement.ray_address:
        ray.init(address=placement.ray_address, logging_level=level, log_to_driver=level <= logging.INFO)
    else:
        ray.init(include_dashboard=False, logging_level=level, log_to_driver=level <= logging.INFO)
    atexit.register(ray.shutdown)
