"""VLA policies: one folder per family (``openvla/``, ``openvla_oft/``, ``pi0/``); ``make_policy`` builds one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlarl.policies.openvla.action_tokenizer import ActionNormStats
from vlarl.policies.openvla.factory import make_openvla
from vlarl.policies.openvla.policy import OpenVLAPolicy
from vlarl.policies.openvla_oft import make_openvla_oft
from vlarl.policies.pi0 import make_pi0

FamilyBuilder = Callable[..., Any]
"""``(cfg, action_dim, proprio_dim, norm_stats, instructions) -> policy`` (a ``VLAPolicy``, on CPU)."""
_FAMILIES: dict[str, FamilyBuilder] = {}


def register_family(name: str, builder: FamilyBuilder) -> None:
    """Make ``policy.family=<name>`` build policies with ``builder``."""
    _FAMILIES[name] = builder


def families() -> list[str]:
    return sorted(_FAMILIES)


def make_policy(
    cfg: Any,
    action_dim: int,
    proprio_dim: int = 0,
    norm_stats: ActionNormStats | None = None,
    instructions: list[str] = (),
):
    """A policy from a ``PolicyConfig`` by its family's builder, on ``cfg.device``.

    ``norm_stats`` (from a dataset) and ``instructions`` (the tokenizer's training text) are used
    for new policies; a checkpoint brings its own.
    """
    if cfg.family not in _FAMILIES:
        raise ValueError(f"unknown policy family {cfg.family!r}; families: {', '.join(families())}")
    policy = _FAMILIES[cfg.family](cfg, action_dim, proprio_dim, norm_stats, instructions)
    return policy.to(resolve_device(cfg.device))


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


register_family("openvla", make_openvla)
register_family("openvla_oft", make_openvla_oft)
register_family("pi0", make_pi0)

__all__ = ["ActionNormStats", "OpenVLAPolicy", "families", "make_policy", "register_family", "resolve_device"]
