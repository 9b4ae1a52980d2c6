"""LeRobot's π0 checkpoint layout (``lerobot/policies/pi0``, read at LeRobot 7427f31): load a folder as a
``Pi0Policy`` on π0's PaliGemma prefix, and write a policy back in that layout.

A folder holds:

- ``config.json``: LeRobot's ``PI0Config`` (``"type": "pi0"``, ``chunk_size``, ``num_inference_steps``,
  ``min_period`` / ``max_period``, ...).
- ``model.safetensors``: under ``model.paligemma_with_expert.``, ``paligemma.model.{vision_tower,
  multi_modal_projector, language_model}.*`` (SigLIP under ``vision_tower.vision_model``, projector, Gemma) and
  ``gemma_expert.model.{layers, norm}.*`` (the action expert); ``model.{action_in_proj, action_out_proj,
  state_proj, action_time_mlp_in, action_time_mlp_out}.*``. As LeRobot's loader: the ``model.`` prefix may be
  absent, ``paligemma.lm_head`` is the tied prompt embedding, older folders name the time MLP ``time_mlp_*``; the
  LM heads are not used.
- ``policy_preprocessor_step_<i>_normalizer_processor.safetensors``: MEAN_STD statistics ``observation.state.*``
  and ``action.*`` (``mean``, ``std``).
- the PaliGemma tokenizer's files (``tokenizer.json``, or ``tokenizer.model`` + ``tokenizer_config.json``): LeRobot
  fetches ``google/paligemma-3b-pt-224`` at run time; here nothing is downloaded, so copy them into the folder.

Sizes are read from the tensors (π0's Gemma variants have one KV head; SigLIP heads are 72 wide, So400m's), not
from the variant names. LeRobot pads state and actions with zeros to ``max_state_dim`` / ``max_action_dim``
(32); the loaded expert keeps the env's first P state columns of ``state_proj`` (exact: the rest multiply zeros)
and the first A action columns / rows of ``action_in_proj`` / ``action_out_proj`` (the padded dims' flow targets
are zeros, so dropping them drops only the noise they carry at the start of denoising). The prompt is
``"{instruction}\\n"`` (LeRobot's newline step); vlarl lower-cases instructions and strips a final period.
``save_lerobot`` writes the same layout (with ``max_*_dim`` = the env's) plus ``vlarl_heads.safetensors``
(the value and noise heads RL adds), so RL checkpoints of such a policy load back the same way.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import PaliGemmaConfig

from vlarl.policies.openvla.checkpoint import load_module
from vlarl.policies.openvla.text_tokenizer import load_tokenizer
from vlarl.policies.pi0.expert import ExpertConfig
from vlarl.policies.pi0.paligemma import PaliGemmaVLA
from vlarl.policies.pi0.policy import Pi0Policy
from vlarl.utils.io import atomic_dir, atomic_write_json

PALIGEMMA = "paligemma_with_expert.paligemma.model."
EXPERT = "paligemma_with_expert.gemma_expert.model."
PROJECTIONS = ("action_in_proj", "action_out_proj", "state_proj", "action_time_mlp_in", "action_time_mlp_out")
# LeRobot's transformers nests SigLIP under vision_model; transformers 5's SiglipVisionModel does not (it renames so
# on from_pretrained): read both, write LeRobot's.
LEROBOT_TOWER = f"{PALIGEMMA}vision_tower.vision_model."
UNUSED = ("paligemma_with_expert.paligemma.lm_head.", "paligemma_with_expert.gemma_expert.lm_head.")
SIGLIP_HEAD_DIM = 72
NORMALIZER = "policy_preprocessor_step_{}_normalizer_processor.safetensors"
PROMPT = "{instruction}\n"


@dataclass
class MeanStdStats:
    """LeRobot's MEAN_STD normalisation: ``(x - mean) / (std + eps)``; the inverse is ``x std + mean``."""

    mean: np.ndarray
    std: np.ndarray
    eps: float = 1e-8
    bounded = False

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / (self.std + self.eps)).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)


def is_lerobot_pi0(path: str | Path) -> bool:
    """Whether ``path`` is a LeRobot policy folder (``config.json`` with a ``type``) rather than vlarl's layout."""
    file = Path(path) / "config.json"
    return file.is_file() and "type" in json.loads(file.read_text())


def _gemma_sizes(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, int]:
    """Width, depth, heads (one KV head), head dim and MLP width of the Gemma layers under ``prefix``."""
    depth = len({int(m.group(1)) for k in tensors if (m := re.match(rf"{re.escape(prefix)}layers\.(\d+)\.", k))})
    if depth == 0:
        raise ValueError(f"no Gemma layers under {prefix!r}")
    q, k = tensors[f"{prefix}layers.0.self_attn.q_proj.weight"], tensors[f"{prefix}layers.0.self_attn.k_proj.weight"]
    head_dim = k.shape[0]  # one KV head
    return dict(
        width=q.shape[1],
        depth=depth,
        num_heads=q.shape[0] // head_dim,
        head_dim=head_dim,
        mlp_dim=tensors[f"{prefix}layers.0.mlp.gate_proj.weight"].shape[0],
    )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors`` with LeRobot's key fixes applied and the ``model.`` prefix removed."""
    file = path / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors (LeRobot's pi0 layout; only safetensors are loaded)")
    tensors = {}
    for key, value in load_file(file).items():
        key = key.removeprefix("model.")
        key = re.sub(r"^time_mlp_(in|out)\.", r"action_time_mlp_\1.", key)
        key = key.replace(LEROBOT_TOWER, f"{PALIGEMMA}vision_tower.")
        tensors[key] = value
    embed = f"{PALIGEMMA}language_model.embed_tokens.weight"
    if embed not in tensors and f"{UNUSED[0]}weight" in tensors:
        tensors[embed] = tensors[f"{UNUSED[0]}weight"]
    return tensors


def _stats(path: Path, key: str, dim: int) -> MeanStdStats:
    """The first ``dim`` entries of ``<key>.mean`` / ``<key>.std`` from the preprocessor's normalizer file."""
    files = sorted(path.glob(NORMALIZER.format("*")))
    if not files:
        raise FileNotFoundError(f"{path}: no {NORMALIZER.format('<i>')} (LeRobot's MEAN_STD statistics)")
    stats = load_file(files[0])
    if f"{key}.mean" not in stats or f"{key}.std" not in stats:
        raise ValueError(f"{files[0]}: no {key}.mean / {key}.std; it has {sorted(stats)}")
    mean, std = (stats[f"{key}.{s}"].float().numpy() for s in ("mean", "std"))
    if len(mean) < dim:
        raise ValueError(f"{files[0]}: {key} statistics have {len(mean)} dims, the env has {dim}")
    return MeanStdStats(mean[:dim], std[:dim])


def load_lerobot(path: str | Path, action_dim: int, proprio_dim: int, **options: Any) -> Pi0Policy:
    """A ``Pi0Policy`` from a LeRobot π0 folder for an env of ``action_dim`` actions and ``proprio_dim`` state;
    ``options`` are ``Pi0Policy``'s (``policy.pi0``), their ``chunk_len`` must be the folder's ``chunk_size``."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if config.get("type") != "pi0":
        raise ValueError(f"{path} is not a LeRobot pi0 checkpoint (config.json type={config.get('type')!r})")
    chunk = config.get("chunk_size", 50)
    if options.setdefault("chunk_len", chunk) != chunk:
        raise ValueError(f"{path} denoises chunks of {chunk}; policy.pi0.chunk_len={options['chunk_len']}")
    tensors = _read_tensors(path)
    text, expert = _gemma_sizes(tensors, f"{PALIGEMMA}language_model."), _gemma_sizes(tensors, EXPERT)
    if (text["depth"], text["head_dim"]) != (expert["depth"], expert["head_dim"]):
        raise ValueError(f"{path}: the expert ({expert}) cannot attend to the VLM's layers ({text})")
    max_action = tensors["action_in_proj.weight"].shape[1]
    max_state = tensors["state_proj.weight"].shape[1] if "state_proj.weight" in tensors else 0
    if action_dim > max_action or proprio_dim > max_state:
        raise ValueError(
            f"{path} takes actions of <= {max_action} and states of <= {max_state} dims; "
            f"the env has {action_dim} and {proprio_dim}"
        )
    tower = f"{PALIGEMMA}vision_tower."
    patch = tensors[f"{tower}embeddings.patch_embedding.weight"]
    vision_width, p = patch.shape[0], patch.shape[-1]
    vision_layers = {
        int(m.group(1)) for k in tensors if (m := re.match(rf"{re.escape(tower)}encoder\.layers\.(\d+)\.", k))
    }
    vocab = tensors[f"{PALIGEMMA}language_model.embed_tokens.weight"].shape[0]
    vlm = PaliGemmaConfig(
        text_config=dict(
            model_type="gemma",
            vocab_size=vocab,
            hidden_size=text["width"],
            intermediate_size=text["mlp_dim"],
            num_hidden_layers=text["depth"],
            num_attention_heads=text["num_heads"],
            num_key_value_heads=1,
            head_dim=text["head_dim"],
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=vision_width,
            intermediate_size=tensors[f"{tower}encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=len(vision_layers),
            num_attention_heads=vision_width // SIGLIP_HEAD_DIM,
            patch_size=p,
            image_size=p * math.isqrt(tensors[f"{tower}embeddings.position_embedding.weight"].shape[0]),
            vision_use_head=False,
        ),
        projection_dim=text["width"],
        vocab_size=vocab,
        n_action_bins=256,
        prompt_suffix_id=None,
    )
    expert_cfg = ExpertConfig(
        action_dim=action_dim,
        chunk_len=chunk,
        prefix_dim=0,
        state_dim=proprio_dim,
        num_kv_heads=1,
        min_period=config.get("min_period", 4e-3),
        max_period=config.get("max_period", 4.0),
        **expert,
    )
    options.setdefault("denoise_steps", config.get("num_inference_steps", 10))
    tokenizer = _tokenizer(path)
    action_stats = _stats(path, "action", action_dim)
    policy = Pi0Policy(
        PaliGemmaVLA(vlm),
        tokenizer,
        action_stats,
        action_dim,
        expert=expert_cfg,
        prompt=PROMPT,
        action_vocab_size=vocab,
        **options,
    )
    policy.proprio_stats = _stats(path, "observation.state", proprio_dim) if proprio_dim else None
    _load_weights(policy, tensors, path, action_dim, proprio_dim)
    return policy


def _tokenizer(path: Path) -> Any:
    try:
        return load_tokenizer(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}. LeRobot's pi0 folders do not hold the PaliGemma tokenizer: copy the files of "
            "google/paligemma-3b-pt-224 (tokenizer.json, tokenizer_config.json) into it"
        ) from None


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_weights(policy: Pi0Policy, tensors: dict[str, torch.Tensor], path: Path, a: int, p: int) -> None:
    """Every tensor of the folder into ``policy`` (projections cut to the env's dims); strays raise."""
    vlm, expert = policy.model, policy.expert
    groups = {
        f"{PALIGEMMA}vision_tower.": vlm.vision_backbone.vision_tower,
        f"{PALIGEMMA}multi_modal_projector.": vlm.vision_backbone.multi_modal_projector,
        f"{PALIGEMMA}language_model.": vlm.language_model,
        EXPERT: expert.gemma_expert,
    }
    for prefix, module in groups.items():
        load_module(module, _part(tensors, prefix), f"{path} ({prefix}*)")
    cut = {
        "action_in_proj": lambda w: w[:, :a] if w.dim() == 2 else w,
        "action_out_proj": lambda w: w[:a],
        "state_proj": lambda w: w[:, :p] if w.dim() == 2 else w,
    }
    for name in PROJECTIONS:
        module = getattr(expert, name)
        if module is None:  # no state token (proprio_dim 0): LeRobot's state_proj goes unused
            continue
        part = {k: cut.get(name, lambda w: w)(v) for k, v in _part(tensors, f"{name}.").items()}
        load_module(module, part, f"{path} ({name})")
    known = (*groups, *(f"{n}." for n in PROJECTIONS), *UNUSED)
    stray = sorted(k for k in tensors if not k.startswith(known))
    if stray:
        raise ValueError(f"{path}: tensors outside LeRobot's pi0 layout: {stray[:5]}")
    heads_file = path / "vlarl_heads.safetensors"
    heads = load_file(heads_file) if heads_file.is_file() else {}
    for name in ("value_head", "noise_head"):
        module, part = getattr(policy, name), _part(heads, f"{name}.")
        if module is not None and part:  # a folder without them (LeRobot's own) starts the heads fresh
            load_module(module, part, f"{heads_file} ({name})")


def save_lerobot(policy: Pi0Policy, path: str | Path) -> Path:
    """Write a PaliGemma-backed ``policy`` in LeRobot's π0 layout (atomically), heads and tokenizer beside it."""
    vlm, expert = policy.model, policy.expert
    tensors = {
        **{f"model.{LEROBOT_TOWER}{k}": v for k, v in vlm.vision_backbone.vision_tower.state_dict().items()},
        **{
            f"model.{PALIGEMMA}multi_modal_projector.{k}": v
            for k, v in vlm.vision_backbone.multi_modal_projector.state_dict().items()
        },
        **{f"model.{PALIGEMMA}language_model.{k}": v for k, v in vlm.language_model.state_dict().items()},
        **{f"model.{EXPERT}{k}": v for k, v in expert.gemma_expert.state_dict().items()},
    }
    for name in PROJECTIONS:
        module = getattr(expert, name)
        if module is not None:  # a policy without a state token has no state_proj (max_state_dim 0)
            tensors.update({f"model.{name}.{k}": v for k, v in module.state_dict().items()})
    stats = {"action.mean": policy.norm_stats.mean, "action.std": policy.norm_stats.std}
    if policy.proprio_stats is not None:
        stats |= {
            "observation.state.mean": policy.proprio_stats.mean,
            "observation.state.std": policy.proprio_stats.std,
        }
    config = {
        "type": "pi0",
        "chunk_size": policy.chunk_len,
        "n_action_steps": policy.chunk_len,
        "max_action_dim": policy.action_dim,
        "max_state_dim": expert.config.state_dim,
        "num_inference_steps": policy.denoise_steps,
        "min_period": expert.config.min_period,
        "max_period": expert.config.max_period,
    }
    heads = {
        f"{name}.{k}": v
        for name in ("value_head", "noise_head")
        if getattr(policy, name) is not None
        for k, v in getattr(policy, name).state_dict().items()
    }
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "model.safetensors")
        save_file({k: torch.as_tensor(v) for k, v in stats.items()}, tmp / NORMALIZER.format(0))
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, tmp / "vlarl_heads.safetensors")
        policy.tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / "config.json", config)
    return Path(path)
