"""π0-style policies: a flow-matching action expert on a VLM prefix, with RL log-probs from Flow-SDE / Flow-Noise."""

from __future__ import annotations

import dataclasses
from typing import Any

from vlarl.policies.openvla.factory import make_openvla
from vlarl.policies.pi0.policy import Pi0Policy


def make_pi0(cfg: Any, action_dim: int, proprio_dim: int, norm_stats: Any, instructions: list[str]):
    """The pi0 family's builder: the Prismatic prefix of ``make_openvla`` with ``Pi0Policy``, options from
    ``policy.pi0``."""
    options = dataclasses.asdict(cfg.pi0)  # its fields are Pi0Policy's keywords
    return make_openvla(cfg, action_dim, proprio_dim, norm_stats, instructions, Pi0Policy, **options)


__all__ = ["Pi0Policy", "make_pi0"]
