"""LoRA (``peft``) on the language model of a policy, and merging it back for export."""

from __future__ import annotations

import copy

from peft import LoraConfig, LoraModel

from vlarl.policies.openvla.policy import OpenVLAPolicy


def apply_lora(
    policy: OpenVLAPolicy,
    rank: int,
    alpha: int,
    targets: list[str],
    train_projector: bool = True,
    train_vision: bool = False,
) -> int:
    """Inject LoRA adapters into ``policy.model.language_model`` in place and freeze what is not trained.

    Trained: the adapters, the policy's heads but a separate critic (value head, proprio projector, an action
    head), and optionally the projector and the vision towers. Returns the number of trainable parameters.
    """
    lm = policy.model.language_model
    for p in policy.parameters():
        p.requires_grad_(False)
    policy.lora = LoraModel(lm, LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)), "default")
    trained = [module for name, module in policy.heads().items() if name != "critic"]
    trained += [policy.model.projector] if train_projector else []
    trained += [policy.model.vision_backbone] if train_vision else []
    for module in trained:
        module.requires_grad_(True)
    for name, p in lm.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
    return sum(p.numel() for p in policy.parameters() if p.requires_grad)


def merged_copy(policy: OpenVLAPolicy) -> OpenVLAPolicy:
    """A copy of ``policy`` with its LoRA adapters merged into the base weights (itself if it has none)."""
    if getattr(policy, "lora", None) is None:
        return policy
    out = copy.deepcopy(policy)
    out.model.language_model = out.lora.merge_and_unload()
    out.lora = None
    return out
