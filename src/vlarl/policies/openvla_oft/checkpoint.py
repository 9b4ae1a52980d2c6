"""OpenVLA-OFT's released fine-tunes: OpenVLA's Hugging Face layout plus OFT's component files.

A folder as ``moojink/openvla-7b-oft-finetuned-libero-spatial`` holds, beside ``config.json``, the safetensors
shards and the tokenizer, ``action_head--<step>_checkpoint.pt`` (the L1-regression head: ``model.layer_norm1``,
``model.fc1``, ``model.mlp_resnet_blocks.<i>.ffn.{0,1}``, ``model.layer_norm2``, ``model.fc2``),
``proprio_projector--<step>_checkpoint.pt`` (``fc1`` ``[D, P]``, ``fc2`` ``[D, D]``) and ``dataset_statistics.json``
(``{<dataset>: {"action": {q01, q99, mask, ...}, "proprio": {q01, q99, ...}}}``). The ``.pt`` files are state
dicts saved from DDP modules (keys start with ``module.``), read here with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

COMPONENTS = {"action_head": "action_head", "proprio_projector": "proprio_projector"}  # file stem -> policy head


def component_file(path: Path, stem: str) -> Path | None:
    """The one ``<stem>--<step>_checkpoint.pt`` in ``path`` (None when absent; several are an error)."""
    found = sorted(path.glob(f"{stem}--*_checkpoint.pt"))
    if len(found) > 1:
        raise ValueError(f"{path} holds several {stem} files ({', '.join(f.name for f in found)}); keep one")
    return found[0] if found else None


def read_components(path: str | Path) -> dict[str, torch.Tensor]:
    """OFT's component tensors in ``path`` as ``{"<head>.<name>": tensor}`` (``module.`` prefixes dropped)."""
    path = Path(path)
    tensors = {}
    for stem, head in COMPONENTS.items():
        file = component_file(path, stem)
        if file is None:
            continue
        state = torch.load(file, map_location="cpu", weights_only=True)
        tensors.update({f"{head}.{k.removeprefix('module.')}": v for k, v in state.items()})
    return tensors
