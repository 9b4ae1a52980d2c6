"""OpenVLA-OFT: the Prismatic backbone of ``openvla/`` decoding an action chunk ``[K, A]`` in one pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlarl.policies.openvla.factory import make_openvla
from vlarl.policies.openvla_oft.checkpoint import read_components
from vlarl.policies.openvla_oft.policy import OFTPolicy


def make_openvla_oft(cfg: Any, action_dim: int, proprio_dim: int, norm_stats: Any, instructions: list[str]):
    """The openvla_oft family's builder: ``make_openvla`` with ``OFTPolicy``, K from ``policy.openvla_oft``."""
    k = cfg.openvla_oft.chunk_len
    extra = {"action_head": cfg.openvla_oft.action_head}
    if cfg.checkpoint:
        extra["extra_heads"] = read_components(Path(cfg.checkpoint))
    return make_openvla(cfg, action_dim, proprio_dim, norm_stats, instructions, OFTPolicy, chunk_len=k, **extra)


__all__ = ["OFTPolicy", "make_openvla_oft"]
