"""Trajectory batches (``schema``) and the serial collector."""

from vlarl.rollout.collector import collect_episodes
from vlarl.rollout.schema import SCHEMA, Batch, concat_batches, gather_obs

__all__ = ["SCHEMA", "Batch", "collect_episodes", "concat_batches", "gather_obs"]
