"""π0's own VLM prefix: PaliGemma (a SigLIP tower, a linear projector and Gemma, as transformers builds them),
whose per-layer keys/values the action expert attends to (LeRobot's ``PaliGemmaWithExpertModel``).

Prefix: ``[image tokens of each view, prompt tokens]``; attention among the real prefix tokens is bidirectional
(π0's prefix ``att_masks`` are all 0) and positions count real tokens (``cumsum(mask) - 1``), so padding anywhere
changes nothing. Images: uint8 ``[N, H, W, 3]`` -> bilinear resize to the tower's size -> ``[-1, 1]`` (LeRobot's
``img * 2 - 1``). Prompt embeddings are Gemma's scaled ones (transformers >= 5.4 scales inside ``embed_tokens``,
as LeRobot relies on); image features are ``get_image_features``' projected patches, unscaled, as in LeRobot.

The module offers what ``Pi0Policy`` reads of a Prismatic VLA (``vision_backbone.normalize``, ``embed_prefix``,
``run_llm``, ``language_model``, ``hidden_size``, ``config.n_action_bins``), so the policy code is shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GemmaModel, PaliGemmaConfig, SiglipVisionModel
from transformers.models.paligemma.modeling_paligemma import PaliGemmaMultiModalProjector

from vlarl.policies.pi0.expert import PrefixCache, additive_mask


class PaliGemmaVision(nn.Module):
    """SigLIP + projector: images ``[N, 3, S, S]`` in ``[-1, 1]`` -> tokens ``[N, P, D]`` (P = (S / patch)^2)."""

    def __init__(self, config: PaliGemmaConfig):
        super().__init__()
        self.image_size = config.vision_config.image_size
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.multi_modal_projector = PaliGemmaMultiModalProjector(config)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, S, S]`` in ``[-1, 1]``."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.multi_modal_projector(self.vision_tower(pixels).last_hidden_state)


class PaliGemmaVLA(nn.Module):
    """``config``: a ``PaliGemmaConfig`` (its ``n_action_bins`` set: the 256-bin record of actions)."""

    def __init__(self, config: PaliGemmaConfig):
        super().__init__()
        self.config = config
        self.vision_backbone = PaliGemmaVision(config)
        self.language_model = GemmaModel(config.text_config)
        self.proprio_projector = None  # π0's state enters the action expert, not the prefix

    @property
    def hidden_size(self) -> int:
        return self.config.text_config.hidden_size

    def embed_prefix(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixel_values [B, V, 3, S, S]``, ``input_ids``/``attention_mask [B, L]`` -> embeddings ``[B, V P + L, D]``
        and mask ``[B, V P + L]`` (1 = real)."""
        b, v = pixel_values.shape[:2]
        images = self.vision_backbone(pixel_values.flatten(0, 1)).reshape(b, -1, self.hidden_size)
        text = self.language_model.embed_tokens(input_ids)
        mask = torch.cat([attention_mask.new_ones(images.shape[:2]), attention_mask], dim=1)
        return torch.cat([images.to(text.dtype), text], dim=1), mask

    def run_llm(
        self, embeds: torch.Tensor, mask: torch.Tensor, past_key_values: DynamicCache | None = None
    ) -> tuple[None, torch.Tensor, DynamicCache]:
        """Gemma over the whole prefix, bidirectional among real tokens: ``(None, hidden [B, S, D], cache)`` (no LM
        head: π0 reads keys/values, never logits)."""
        keep = mask.bool()
        s = keep.shape[1]
        allowed = keep[:, None, :].expand(-1, s, -1) | torch.eye(s, dtype=torch.bool, device=keep.device)
        positions = (keep.long().cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache() if past_key_values is None else past_key_values
        out = self.language_model(None, additive_mask(allowed, embeds.dtype), positions, cache, embeds, use_cache=True)
        return None, out.last_hidden_state, cache

    def prefix_cache(self, embeds: torch.Tensor, mask: torch.Tensor) -> PrefixCache:
        """The per-layer keys/values the expert attends to, and the prefix's final hidden states ``[B, S, D]``."""
        _, hidden, cache = self.run_llm(embeds, mask)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        return PrefixCache(keys, values, mask.bool(), hidden)
