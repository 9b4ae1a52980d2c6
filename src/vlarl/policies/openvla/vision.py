"""Vision towers built from ``transformers`` classes, addressed by OpenVLA's timm model ids.

OpenVLA names its towers by timm id (``vit_so400m_patch14_siglip_224``,
``vit_large_patch14_reg4_dinov2.lvd142m``). vlarl builds the same networks from
``SiglipVisionModel`` / ``Dinov2WithRegistersModel`` (no timm, whose import needs torchvision) and
converts timm-layout weights on load (``checkpoint.py``). A tower returns the patch features of
its second-to-last block, without the final norm and without class/register tokens, as
OpenVLA's featurizer does: ``[B, num_patches, width]``.

``register_vision_tower`` adds specs (e.g. the tiny ones vlarl's presets use, or a user's own).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionTowerSpec:
    """Architecture of one tower. ``kind``: 'siglip' or 'dinov2_reg'; ``act``: HF activation name."""

    kind: str
    width: int
    depth: int
    heads: int
    mlp: int
    patch: int
    image_size: int
    act: str = "gelu"
    registers: int = 0
    eps: float = 1e-6

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (SIGLIP_MEAN, SIGLIP_STD) if self.kind == "siglip" else (IMAGENET_MEAN, IMAGENET_STD)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch) ** 2


VISION_TOWERS: dict[str, VisionTowerSpec] = {
    "vit_so400m_patch14_siglip_224": VisionTowerSpec("siglip", 1152, 27, 16, 4304, 14, 224),
    "vit_large_patch14_reg4_dinov2.lvd142m": VisionTowerSpec("dinov2_reg", 1024, 24, 16, 4096, 14, 224, registers=4),
    "vlarl_tiny_siglip_p8": VisionTowerSpec("siglip", 128, 3, 4, 512, 8, 64),
    "vlarl_tiny_dinov2_p8": VisionTowerSpec("dinov2_reg", 128, 3, 4, 512, 8, 64, registers=4),
    "vlarl_micro_siglip_p16": VisionTowerSpec("siglip", 64, 2, 2, 256, 16, 64),
}


def register_vision_tower(timm_id: str, spec: VisionTowerSpec) -> None:
    """Make ``timm_id`` buildable (and loadable from OpenVLA-layout checkpoints)."""
    VISION_TOWERS[timm_id] = spec


def tower_spec(timm_id: str, image_size: int | None = None) -> VisionTowerSpec:
    if timm_id not in VISION_TOWERS:
        raise KeyError(
            f"unknown vision tower {timm_id!r}; registered: {', '.join(sorted(VISION_TOWERS))} "
            "(add one with vlarl.policies.openvla.vision.register_vision_tower)"
        )
    spec = VISION_TOWERS[timm_id]
    if image_size is not None and image_size != spec.image_size:
        spec = VisionTowerSpec(**{**spec.__dict__, "image_size": image_size})
    return spec


class VisionTower(nn.Module):
    """One tower: pixel values ``[B, 3, H, W]`` (normalised) -> patch features ``[B, N, width]``."""

    def __init__(self, spec: VisionTowerSpec):
        super().__init__()
        self.spec = spec
        common = dict(
            hidden_size=spec.width,
            num_hidden_layers=spec.depth,
            num_attention_heads=spec.heads,
            patch_size=spec.patch,
            image_size=spec.image_size,
            hidden_act=spec.act,
            layer_norm_eps=spec.eps,
        )
        if spec.kind == "siglip":
            self.model = SiglipVisionModel(
                SiglipVisionConfig(**common, intermediate_size=spec.mlp, vision_use_head=False)
            )
            self.prefix_tokens = 0
        elif spec.kind == "dinov2_reg":
            ratio, rest = divmod(spec.mlp, spec.width)  # the config sizes its MLP as hidden_size x mlp_ratio (an int)
            if rest:
                raise ValueError(f"DINOv2 tower: MLP width {spec.mlp} must be a multiple of the width {spec.width}")
            config = Dinov2WithRegistersConfig(
                **common, mlp_ratio=ratio, num_register_tokens=spec.registers, layerscale_value=1.0
            )
            self.model = Dinov2WithRegistersModel(config)
            self.prefix_tokens = 1 + spec.registers
        else:
            raise ValueError(f"unknown tower kind {spec.kind!r}; kinds: siglip, dinov2_reg")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[-2][:, self.prefix_tokens :]


class VisionBackbone(nn.Module):
    """One tower (``featurizer``) or two fused ones (``fused_featurizer``), concatenated on channels.

    Input ``[B, 3 * n_towers, H, W]`` (each tower's normalised copy, stacked on channels as OpenVLA
    does); output ``[B, N, sum of widths]``.
    """

    def __init__(self, specs: list[VisionTowerSpec]):
        super().__init__()
        if len(specs) not in (1, 2) or (len(specs) == 2 and specs[0].num_patches != specs[1].num_patches):
            raise ValueError("a vision backbone has one tower or two with the same patch grid")
        self.specs = specs
        self.featurizer = VisionTower(specs[0])
        self.fused_featurizer = VisionTower(specs[1]) if len(specs) == 2 else None

    @property
    def embed_dim(self) -> int:
        return sum(s.width for s in self.specs)

    @property
    def num_patches(self) -> int:
        return self.specs[0].num_patches

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float images ``[B, H, W, 3]`` in 0..255 -> pixel values ``[B, 3 * n_towers, S, S]``."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        size = self.specs[0].image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        out = []
        for spec in self.specs:
            mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in spec.mean_std)
            out.append((x - mean) / std)
        return torch.cat(out, dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.featurizer(pixel_values[:, :3])
        if self.fused_featurizer is not None:
            feats = torch.cat([feats, self.fused_featurizer(pixel_values[:, 3:6])], dim=-1)
        return feats
