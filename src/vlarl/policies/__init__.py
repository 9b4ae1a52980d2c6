"""VLA policies: one folder per family (``openvla/``) and ``make_policy`` to build one from config."""

from __future__ import annotations

from typing import Any

from vlarl.policies.openvla.action_tokenizer import ActionNormStats
from vlarl.policies.openvla.policy import OpenVLAPolicy

FAMILIES = ("openvla",)


def make_policy(
    cfg: Any,
    action_dim: int,
    proprio_dim: int = 0,
    norm_stats: ActionNormStats | None = None,
    instructions: list[str] = (),
):
    """A policy from a ``PolicyConfig``: loaded from ``cfg.checkpoint`` or built from ``cfg.arch``.

    ``norm_stats`` (from a dataset) and ``instructions`` (the tokenizer's training text) are used
    for new policies; a checkpoint brings its own. LoRA is applied when ``cfg.lora_rank > 0``.
    """
    if cfg.family not in FAMILIES:
        raise ValueError(f"unknown policy family {cfg.family!r}; families: {', '.join(FAMILIES)}")
    from vlarl.policies.openvla.checkpoint import load_pretrained
    from vlarl.policies.openvla.factory import build_policy
    from vlarl.policies.openvla.lora import apply_lora

    kwargs = dict(critic=cfg.critic)
    if cfg.checkpoint:
        policy = load_pretrained(cfg.checkpoint, unnorm_key=cfg.unnorm_key, **kwargs)
        if policy.action_dim != action_dim:
            raise ValueError(
                f"checkpoint {cfg.checkpoint} predicts {policy.action_dim}-dim actions, the env has {action_dim}"
            )
    else:
        policy = build_policy(
            cfg.arch,
            action_dim,
            norm_stats,
            proprio_dim if cfg.use_proprio else 0,
            instructions,
            prompt=cfg.prompt,
            value_position=cfg.value_position,
            **kwargs,
        )
    if cfg.lora_rank > 0:
        apply_lora(policy, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.train_projector, cfg.train_vision)
    return policy.to(resolve_device(cfg.device))


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


__all__ = ["ActionNormStats", "OpenVLAPolicy", "make_policy", "resolve_device"]
