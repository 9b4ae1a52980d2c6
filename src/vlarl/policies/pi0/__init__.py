"""π0-style policies: a flow-matching action expert on a VLM prefix, with RL log-probs from Flow-SDE / Flow-Noise."""

from __future__ import annotations

import dataclasses
from typing import Any

from vlarl.policies.openvla.factory import make_openvla
from vlarl.policies.pi0.lerobot import is_lerobot_pi0, load_lerobot
from vlarl.policies.pi0.policy import Pi0Policy


def make_pi0(cfg: Any, action_dim: int, proprio_dim: int, norm_stats: Any, instructions: list[str]):
    """The pi0 family's builder, options from ``policy.pi0``: a LeRobot π0 folder in ``policy.checkpoint`` loads on
    π0's PaliGemma prefix (``lerobot.py``; LoRA is not offered there); else the Prismatic prefix of
    ``make_openvla``."""
    options = dataclasses.asdict(cfg.pi0)  # its fields are Pi0Policy's keywords
    if cfg.checkpoint and is_lerobot_pi0(cfg.checkpoint):
        if cfg.lora_rank > 0:
            raise ValueError("policy.lora_rank: LoRA is built for the Prismatic prefix; a LeRobot pi0 trains fully")
        return load_lerobot(cfg.checkpoint, action_dim, proprio_dim if cfg.use_proprio else 0, **options)
    return make_openvla(cfg, action_dim, proprio_dim, norm_stats, instructions, Pi0Policy, **options)


__all__ = ["Pi0Policy", "make_pi0"]
