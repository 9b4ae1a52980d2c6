"""Trajectory batches and the serial collector."""

from vlarl.rollout.collector import Batch, collect_episodes

__all__ = ["Batch", "collect_episodes"]
