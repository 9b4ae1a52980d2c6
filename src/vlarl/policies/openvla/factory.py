"""Named architectures and the builder of an ``OpenVLAPolicy`` from scratch or from a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vlarl.policies.openvla.action_tokenizer import ActionNormStats
from vlarl.policies.openvla.modeling import PrismaticConfig, PrismaticVLA
from vlarl.policies.openvla.policy import OpenVLAPolicy
from vlarl.policies.openvla.text_tokenizer import build_byte_tokenizer

LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    vocab_size=32064,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=32000,
)
TINY_LLAMA = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=3,
)
MICRO_LLAMA = {
    **TINY_LLAMA,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}

ARCHS: dict[str, dict[str, Any]] = {
    # SigLIP-style tower (64 px, patch 8 -> 64 patches) + 4-layer Llama, ~4M parameters.
    "tiny": dict(timm_model_ids=["vlarl_tiny_siglip_p8"], image_sizes=[64], text_config=TINY_LLAMA),
    # The same with a fused DINOv2-with-registers tower, as OpenVLA-7B fuses DINOv2 + SigLIP.
    "tiny-fused": dict(
        timm_model_ids=["vlarl_tiny_dinov2_p8", "vlarl_tiny_siglip_p8"], image_sizes=[64, 64], text_config=TINY_LLAMA
    ),
    # 16 patches of 16 px + a 2-layer Llama, 0.86M parameters: the fast tests' policy (a decision ~8x cheaper).
    "micro": dict(timm_model_ids=["vlarl_micro_siglip_p16"], image_sizes=[64], text_config=MICRO_LLAMA),
    # OpenVLA-7B (for GPU users; load real weights with policy.checkpoint=<folder>).
    "openvla-7b": dict(
        timm_model_ids=["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        image_sizes=[224, 224],
        text_config=LLAMA2_7B,
        vision_backbone_id="dinosiglip-vit-so-224px",
        llm_backbone_id="llama2-7b-pure",
        prompt_suffix_id=29871,
    ),
}


def build_config(arch: str, vocab_size: int, proprio_dim: int = 0) -> PrismaticConfig:
    """The ``PrismaticConfig`` of a named architecture; tiny ones get ``vocab_size`` padded to 64."""
    if arch not in ARCHS:
        raise ValueError(f"unknown policy arch {arch!r}; archs: {', '.join(ARCHS)}")
    spec = {**ARCHS[arch]}
    text = dict(spec.pop("text_config"))
    text.setdefault("vocab_size", int(math.ceil(vocab_size / 64) * 64))
    return PrismaticConfig(text_config=text, proprio_dim=proprio_dim, **spec)


def build_policy(
    arch: str,
    action_dim: int,
    norm_stats: ActionNormStats | None = None,
    proprio_dim: int = 0,
    instructions: list[str] = (),
    cls: type[OpenVLAPolicy] = OpenVLAPolicy,
    **policy_kwargs: Any,
) -> OpenVLAPolicy:
    """A randomly initialised ``cls`` policy with vlarl's byte-level BPE tokenizer, trained on the prompts of
    ``instructions`` (other text still tokenizes, byte by byte)."""
    prompt = policy_kwargs.get("prompt", OpenVLAPolicy.DEFAULT_PROMPT)
    tokenizer = build_byte_tokenizer([prompt.format(instruction=i) for i in instructions])
    model = PrismaticVLA(build_config(arch, len(tokenizer), proprio_dim))
    return cls(model, tokenizer, norm_stats or ActionNormStats.identity(action_dim), action_dim, **policy_kwargs)


def make_openvla(
    cfg: Any,
    action_dim: int,
    proprio_dim: int,
    norm_stats: ActionNormStats | None,
    instructions: list[str],
    cls: type[OpenVLAPolicy] = OpenVLAPolicy,
    **family_kwargs: Any,
) -> OpenVLAPolicy:
    """The builder of the Prismatic families (``cls``: ``openvla``'s policy or a subclass, with its own
    ``family_kwargs``): loaded from ``cfg.checkpoint`` or built from ``cfg.arch``; LoRA when ``cfg.lora_rank > 0``."""
    from vlarl.policies.openvla.checkpoint import load_pretrained
    from vlarl.policies.openvla.lora import apply_lora

    if cfg.checkpoint:
        from vlarl.policies.openvla.checkpoint import checkpoint_family, read_config

        config = read_config(Path(cfg.checkpoint))
        recorded, k = config.get("vlarl", {}).get("chunk_len"), family_kwargs.get("chunk_len", 1)
        if checkpoint_family(Path(cfg.checkpoint), config) == cls.FAMILY and recorded not in (None, k):
            raise ValueError(
                f"checkpoint {cfg.checkpoint} decodes chunks of {recorded}; policy.{cls.FAMILY}.chunk_len={k}"
            )
        policy = load_pretrained(cfg.checkpoint, cfg.unnorm_key, cls, critic=cfg.openvla.critic, **family_kwargs)
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
            cls,
            prompt=cfg.prompt,
            value_position=cfg.openvla.value_position,
            critic=cfg.openvla.critic,
            **family_kwargs,
        )
    if cfg.lora_rank > 0:
        apply_lora(policy, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.train_projector, cfg.train_vision)
    return policy
