"""The Prismatic VLA: vision backbone -> MLP projector -> Llama causal LM (``transformers``).

Sequence layout (OpenVLA): ``[BOS, patch_1..patch_N, (proprio), prompt tokens..., action tokens...]``;
image patch embeddings go right after BOS. Batches of prompts with different lengths are padded on
the left of the whole sequence (before BOS) and positions are counted from the first real token,
so padding changes nothing.

``PrismaticConfig`` mirrors OpenVLA's ``config.json`` (``checkpoint.py`` reads and writes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from vlarl.policies.openvla.vision import VisionBackbone, tower_spec


@dataclass
class PrismaticConfig:
    """OpenVLA's config fields that define the network (names as in its ``config.json``)."""

    timm_model_ids: list[str]
    image_sizes: list[int]
    text_config: dict[str, Any]
    vision_backbone_id: str = "custom"
    llm_backbone_id: str = "custom"
    arch_specifier: str = "no-align+gelu-mlp"
    n_action_bins: int = 256
    pad_to_multiple_of: int = 64
    norm_stats: dict[str, Any] = field(default_factory=dict)
    proprio_dim: int = 0  # >0 adds one projected proprio token after the patches (as OpenVLA-OFT)
    prompt_suffix_id: int | None = None  # OpenVLA-7B appends Llama's empty token 29871 to the prompt

    @property
    def use_fused_vision_backbone(self) -> bool:
        return len(self.timm_model_ids) == 2


class Projector(nn.Module):
    """``fc1, GELU, fc2`` (one tower) or ``fc1, GELU, fc2, GELU, fc3`` (fused, 4x width first)."""

    def __init__(self, vision_dim: int, llm_dim: int, fused: bool):
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(x)))
        return self.fc3(self.act(x)) if self.fused else x


class ProprioProjector(nn.Module):
    """``fc1, GELU, fc2``: proprio ``[B, P]`` -> one LLM embedding ``[B, D]`` (OpenVLA-OFT's, same names)."""

    def __init__(self, proprio_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PrismaticVLA(nn.Module):
    """Module names match OpenVLA's parameter names: ``vision_backbone``, ``projector``, ``language_model``."""

    def __init__(self, config: PrismaticConfig):
        super().__init__()
        self.config = config
        specs = [tower_spec(t, s) for t, s in zip(config.timm_model_ids, config.image_sizes, strict=True)]
        self.vision_backbone = VisionBackbone(specs)
        self.language_model = LlamaForCausalLM(LlamaConfig(**config.text_config))
        llm_dim = self.language_model.config.hidden_size
        self.projector = Projector(self.vision_backbone.embed_dim, llm_dim, config.use_fused_vision_backbone)
        self.proprio_projector = ProprioProjector(config.proprio_dim, llm_dim) if config.proprio_dim else None
        # Checkpoint tensors the network does not compute with (e.g. a tower's unused pooling head),
        # per tower, kept so that saving writes the checkpoint back complete.
        self.unused_tensors: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def hidden_size(self) -> int:
        return self.language_model.config.hidden_size

    def embed_prefix(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and left-padded ``input_ids [B, L]`` (BOS first among real tokens) -> embeddings, mask.

        ``pixel_values``: ``[B, V, 3 * towers, S, S]`` (V camera views, patches of all views are used).
        Returns ``inputs_embeds [B, L + N, D]`` and ``attention_mask [B, L + N]`` with the N prefix
        embeddings (V x patches, then the optional proprio token) right after each row's BOS.
        """
        b, v = pixel_values.shape[:2]
        patches = self.projector(self.vision_backbone(pixel_values.flatten(0, 1)))
        inserted = patches.reshape(b, v * patches.shape[1], patches.shape[2])
        if self.proprio_projector is not None:
            inserted = torch.cat([inserted, self.proprio_projector(proprio.float()).unsqueeze(1)], dim=1)
        tokens = self.language_model.get_input_embeddings()(input_ids)
        length = input_ids.shape[1]
        n = inserted.shape[1]
        bos_pos = (attention_mask == 0).sum(dim=1, keepdim=True)  # left padding: BOS sits after the pads
        j = torch.arange(length + n, device=input_ids.device).unsqueeze(0).expand(b, -1)
        is_patch = (j > bos_pos) & (j <= bos_pos + n)
        tok_index = torch.where(j <= bos_pos, j, j - n).clamp(0, length - 1)
        patch_index = (j - bos_pos - 1).clamp(0, n - 1)
        gathered_tok = tokens.gather(1, tok_index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        gathered_patch = inserted.to(tokens.dtype).gather(1, patch_index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        embeds = torch.where(is_patch.unsqueeze(-1), gathered_patch, gathered_tok)
        mask = torch.where(is_patch, torch.ones_like(j), attention_mask.gather(1, tok_index))
        return embeds, mask

    def run_llm(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: Any = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Returns (logits [B, S, V], last hidden states [B, S, D], cache)."""
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = position_ids[:, -inputs_embeds.shape[1] :]
        # The cache goes positionally (its keyword is past_key_values in early transformers 5, cache later) and is
        # updated in place, so it is returned as given.
        out = self.language_model.model(
            None, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache=past_key_values is not None
        )
        hidden = out.last_hidden_state
        return self.language_model.lm_head(hidden), hidden, past_key_values
