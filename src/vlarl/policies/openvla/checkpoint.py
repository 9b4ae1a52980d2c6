"""Read and write policies in OpenVLA's Hugging Face checkpoint layout (as ``openvla/openvla-7b``).

A folder holds ``config.json`` (OpenVLA's fields: ``vision_backbone_id``, ``timm_model_ids``,
``image_sizes``, ``use_fused_vision_backbone``, ``text_config``, ``n_action_bins``, ``norm_stats``,
...), ``model.safetensors`` or shards ``model-0000i-of-0000n.safetensors`` with
``model.safetensors.index.json``, and the tokenizer files. vlarl's additions (value head, proprio
projector, policy settings) live in ``vlarl_heads.safetensors`` and ``config.json["vlarl"]``, so
OpenVLA's own files stay exactly in its layout. Only safetensors are read or written.

Parameter names (OpenVLA = timm layout for the vision towers; ours = ``transformers`` modules):

=========================================================  ==============================================
OpenVLA checkpoint                                          vlarl module
=========================================================  ==============================================
``vision_backbone.featurizer.patch_embed.proj.*``           ``...featurizer.model.embeddings.patch_embedding.*``
``vision_backbone.featurizer.pos_embed`` [1, N, D]          SigLIP ``position_embedding.weight`` [N, D];
                                                            DINOv2 ``position_embeddings`` [1, 1+N, D] with a
                                                            zero row for the class token (timm adds no
                                                            position to prefix tokens)
``...featurizer.cls_token`` / ``reg_token``                 DINOv2 ``embeddings.cls_token`` / ``register_tokens``
``...featurizer.blocks.i.attn.qkv.{weight,bias}``           ``q_proj``, ``k_proj``, ``v_proj`` (split in that order)
``...featurizer.blocks.i.attn.proj.*``                      SigLIP ``self_attn.out_proj``; DINOv2 ``attention.o_proj``
``...featurizer.blocks.i.norm{1,2}.*``                      SigLIP ``layer_norm{1,2}``; DINOv2 ``norm{1,2}``
``...featurizer.blocks.i.mlp.fc{1,2}.*``                    ``mlp.fc{1,2}``
``...featurizer.blocks.i.ls{1,2}.scale_factor``             DINOv2 ``layer_scale{1,2}.lambda1`` (OpenVLA renamed
                                                            timm's ``gamma``: HF loaders rewrite ``gamma`` keys)
``...featurizer.norm.*``                                    SigLIP ``post_layernorm``; DINOv2 ``layernorm``
``...featurizer.attn_pool.*``, ``head.*`` (unused)          kept verbatim in ``unused_tensors`` and written back
``vision_backbone.fused_featurizer.*``                      the second tower, same rules
``projector.fc{1,2,3}.*``                                   ``projector.fc{1,2,3}.*``
``language_model.model.*``, ``language_model.lm_head.*``    ``language_model.*`` (``LlamaForCausalLM``)
=========================================================  ==============================================
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlarl.policies.openvla.action_tokenizer import ActionNormStats
from vlarl.policies.openvla.modeling import PrismaticConfig, PrismaticVLA
from vlarl.policies.openvla.policy import OpenVLAPolicy
from vlarl.policies.openvla.text_tokenizer import load_tokenizer
from vlarl.policies.openvla.vision import VisionTower
from vlarl.utils.io import atomic_dir, atomic_write_json

_TOWERS = ("featurizer", "fused_featurizer")
_SIGLIP = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_DINO = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "ls1.scale_factor": "layer_scale1.lambda1",
    "ls2.scale_factor": "layer_scale2.lambda1",
}


def _tower_names(kind: str) -> tuple[str, str, dict[str, str], str, str]:
    """(layers prefix, attention prefix, per-block renames, final norm, patch embedding) of a tower kind."""
    if kind == "siglip":
        return "encoder.layers", "self_attn", _SIGLIP, "post_layernorm", "embeddings.patch_embedding"
    return "encoder.layer", "attention", _DINO, "layernorm", "embeddings.patch_embeddings.projection"


def tower_from_timm(tower: VisionTower, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """timm-layout tensors of one tower -> (state dict of ``tower.model``, unused tensors)."""
    kind = tower.spec.kind
    layers, attn, renames, final_norm, patch = _tower_names(kind)
    out, unused = {}, {}
    for key, value in sd.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias|scale_factor)", key)
        if m:
            i, name, leaf = m.groups()
            if name == "attn.qkv":
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{layers}.{i}.{attn}.{part}.{leaf}"] = chunk.clone()
                continue
            full = f"{name}.{leaf}" if leaf == "scale_factor" else name
            if full in renames:
                out[f"{layers}.{i}.{renames[full]}" + ("" if leaf == "scale_factor" else f".{leaf}")] = value
                continue
        elif key.startswith("patch_embed.proj."):
            out[f"{patch}.{key.rsplit('.', 1)[1]}"] = value
            continue
        elif key.startswith("norm."):
            out[f"{final_norm}.{key.rsplit('.', 1)[1]}"] = value
            continue
        elif key == "pos_embed":
            if kind == "siglip":
                out["embeddings.position_embedding.weight"] = value[0]
            else:
                out["embeddings.position_embeddings"] = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
            continue
        elif key == "cls_token" and kind != "siglip":
            out["embeddings.cls_token"] = value
            continue
        elif key == "reg_token" and kind != "siglip":
            out["embeddings.register_tokens"] = value
            continue
        unused[key] = value
    return out, unused


def tower_to_timm(tower: VisionTower) -> dict[str, torch.Tensor]:
    """The inverse of ``tower_from_timm`` for the tensors the tower computes with."""
    kind = tower.spec.kind
    layers, attn, renames, final_norm, patch = _tower_names(kind)
    inverse = {v: k for k, v in renames.items()}
    sd = tower.model.state_dict()
    out = {}
    for i in range(tower.spec.depth):
        p = f"{layers}.{i}."
        for leaf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(
                [sd[f"{p}{attn}.{x}.{leaf}"] for x in ("q_proj", "k_proj", "v_proj")]
            )
        for ours, theirs in inverse.items():
            if theirs.endswith("scale_factor"):
                out[f"blocks.{i}.{theirs}"] = sd[f"{p}{ours}"]
            else:
                for leaf in ("weight", "bias"):
                    out[f"blocks.{i}.{theirs}.{leaf}"] = sd[f"{p}{ours}.{leaf}"]
    for leaf in ("weight", "bias"):
        out[f"patch_embed.proj.{leaf}"] = sd[f"{patch}.{leaf}"]
        out[f"norm.{leaf}"] = sd[f"{final_norm}.{leaf}"]
    if kind == "siglip":
        out["pos_embed"] = sd["embeddings.position_embedding.weight"].unsqueeze(0)
    else:
        out["pos_embed"] = sd["embeddings.position_embeddings"][:, 1:]
        out["cls_token"] = sd["embeddings.cls_token"] + sd["embeddings.position_embeddings"][:, :1]
        out["reg_token"] = sd["embeddings.register_tokens"]
    return {k: v.contiguous() for k, v in out.items()}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors = {}
        for f in files:
            tensors.update(load_file(path / f))
        return tensors
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    raise FileNotFoundError(
        f"{path}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are loaded)"
    )


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key].contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], path / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    atomic_write_json(
        path / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )


def openvla_state_dict(model: PrismaticVLA) -> dict[str, torch.Tensor]:
    """The model's tensors under OpenVLA's names (timm layout for the towers, unused ones included)."""
    out = {}
    for tower_name in _TOWERS:
        tower = getattr(model.vision_backbone, tower_name)
        if tower is None:
            continue
        tensors = {**tower_to_timm(tower), **model.unused_tensors.get(tower_name, {})}
        out.update({f"vision_backbone.{tower_name}.{k}": v for k, v in tensors.items()})
    out.update({f"projector.{k}": v for k, v in model.projector.state_dict().items()})
    lm = model.language_model.state_dict()
    if model.language_model.config.tie_word_embeddings:
        lm.pop("lm_head.weight", None)
    out.update({f"language_model.{k}": v for k, v in lm.items()})
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def load_openvla_state_dict(model: PrismaticVLA, tensors: dict[str, torch.Tensor]) -> None:
    """Load OpenVLA-named tensors into ``model``; missing or unexpected names raise."""
    model.unused_tensors = {}
    for tower_name in _TOWERS:
        tower = getattr(model.vision_backbone, tower_name)
        prefix = f"vision_backbone.{tower_name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if tower is None:
            if sub:
                raise ValueError(f"checkpoint has {prefix}* tensors but the config has one vision tower")
            continue
        hf, unused = tower_from_timm(tower, sub)
        tower.model.load_state_dict(hf, strict=False)
        expected = set(tower.model.state_dict()) - {"embeddings.mask_token"}
        missing = expected - set(hf)
        if missing:
            raise ValueError(f"{prefix}: checkpoint lacks tensors for {sorted(missing)[:5]}")
        model.unused_tensors[tower_name] = unused
    for name, module in (("projector", model.projector), ("language_model", model.language_model)):
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        result = module.load_state_dict(sub, strict=False)
        missing = (
            [k for k in result.missing_keys if k != "lm_head.weight" or not module.config.tie_word_embeddings]
            if name == "language_model"
            else result.missing_keys
        )
        if missing or result.unexpected_keys:
            raise ValueError(f"{name}: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    known = ("vision_backbone.", "projector.", "language_model.")
    stray = [k for k in tensors if not k.startswith(known)]
    if stray:
        raise ValueError(f"unexpected tensors in checkpoint: {stray[:5]}")


def save_pretrained(
    policy: OpenVLAPolicy, path: str | Path, unnorm_key: str = "vlarl", max_shard_bytes: int = 5 * 2**30
) -> Path:
    """Write ``policy`` as an OpenVLA-layout folder (atomically); returns the path."""
    model = policy.model
    cfg = model.config
    own = {"action": policy.norm_stats.to_dict()}
    if policy.proprio_stats is not None:
        own["proprio"] = policy.proprio_stats.to_dict()
    norm_stats = {**cfg.norm_stats, unnorm_key: own}
    config = {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "vision_backbone_id": cfg.vision_backbone_id,
        "llm_backbone_id": cfg.llm_backbone_id,
        "arch_specifier": cfg.arch_specifier,
        "use_fused_vision_backbone": cfg.use_fused_vision_backbone,
        "image_resize_strategy": "resize-naive",
        "timm_model_ids": cfg.timm_model_ids,
        "timm_override_act_layers": [None] * len(cfg.timm_model_ids),
        "image_sizes": cfg.image_sizes,
        "text_config": {**cfg.text_config, "model_type": "llama"},
        "llm_max_length": cfg.text_config.get("max_position_embeddings", 2048),
        "pad_token_id": cfg.text_config.get("pad_token_id"),
        "pad_to_multiple_of": cfg.pad_to_multiple_of,
        "n_action_bins": cfg.n_action_bins,
        "norm_stats": norm_stats,
        "torch_dtype": "float32",
        "vlarl": {
            "family": policy.FAMILY,
            "chunk_len": policy.chunk_len,
            "action_dim": policy.action_dim,
            "prompt": policy.prompt,
            "value_position": policy.value_position,
            "proprio_dim": cfg.proprio_dim,
            "prompt_suffix_id": cfg.prompt_suffix_id,
            "unnorm_key": unnorm_key,
            "critic": "shared" if policy.critic is None else "separate",
            "action_vocab_size": policy.action_tokenizer.vocab_size,
        },
    }
    heads = {f"{name}.{k}": v for name, module in policy.heads().items() for k, v in module.state_dict().items()}
    with atomic_dir(path) as tmp:
        _write_tensors(tmp, openvla_state_dict(model), max_shard_bytes)
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, tmp / "vlarl_heads.safetensors")
        policy.tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / "config.json", config)
    return Path(path)


def read_config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not an OpenVLA-layout checkpoint (no config.json)")
    return json.loads(file.read_text())


def checkpoint_family(path: Path, config: dict[str, Any]) -> str:
    """The policy family a checkpoint folder holds: vlarl's record, else a LeRobot folder's ``type``, else
    ``openvla_oft`` where OFT's action-head files lie beside OpenVLA's layout, else ``openvla``."""
    if "family" in config.get("vlarl", {}):
        return config["vlarl"]["family"]
    if "type" in config:  # a LeRobot policy folder (its config.json names the policy type: pi0, pi05, ...)
        return config["type"]
    return "openvla_oft" if any(path.glob("action_head--*_checkpoint.pt")) else "openvla"


def load_pretrained(
    path: str | Path,
    unnorm_key: str = "",
    cls: type[OpenVLAPolicy] = OpenVLAPolicy,
    extra_heads: dict[str, torch.Tensor] | None = None,
    **policy_kwargs: Any,
) -> OpenVLAPolicy:
    """Build a ``cls`` policy (``OpenVLAPolicy`` or a subclass) from an OpenVLA-layout folder (ours or OpenVLA's
    own); a folder of another family is refused. ``policy_kwargs`` override the folder's policy settings;
    ``extra_heads`` adds head tensors (``<head>.<name>``) found outside ``vlarl_heads.safetensors`` (their
    presence also sets ``proprio_dim``). ``dataset_statistics.json`` entries extend the config's norm_stats."""
    extra_heads = extra_heads or {}
    path = Path(path)
    config = read_config(path)
    family = checkpoint_family(path, config)
    if family != cls.FAMILY:
        raise ValueError(f"{path} holds a {family} checkpoint; policy.family={cls.FAMILY} cannot load it")
    extra = config.get("vlarl", {})
    stats_file = path / "dataset_statistics.json"
    norm_stats = {
        **config.get("norm_stats", {}),
        **(json.loads(stats_file.read_text()) if stats_file.is_file() else {}),
    }
    proprio = extra_heads.get("proprio_projector.fc1.weight")
    text = {k: v for k, v in config["text_config"].items() if k not in ("model_type", "architectures")}
    pcfg = PrismaticConfig(
        timm_model_ids=list(config["timm_model_ids"]),
        image_sizes=list(config["image_sizes"]),
        text_config=text,
        vision_backbone_id=config.get("vision_backbone_id", "custom"),
        llm_backbone_id=config.get("llm_backbone_id", "custom"),
        arch_specifier=config.get("arch_specifier", "no-align+gelu-mlp"),
        n_action_bins=config.get("n_action_bins", 256),
        pad_to_multiple_of=config.get("pad_to_multiple_of", 64),
        norm_stats=norm_stats,
        proprio_dim=extra.get("proprio_dim", 0) if proprio is None else proprio.shape[1],
        prompt_suffix_id=extra.get("prompt_suffix_id", 29871 if "llama" in config.get("llm_backbone_id", "") else None),
    )
    model = PrismaticVLA(pcfg)
    load_openvla_state_dict(model, _read_tensors(path))
    key = unnorm_key or extra.get("unnorm_key", "")
    stats = pcfg.norm_stats
    if not key:
        if len(stats) != 1:
            raise ValueError(f"{path}: choose policy.unnorm_key among {sorted(stats)}")
        key = next(iter(stats))
    if key not in stats:
        raise ValueError(f"unnorm_key {key!r} not in the checkpoint's norm_stats; keys: {sorted(stats)}")
    norm = ActionNormStats.from_dict(stats[key]["action"])
    kwargs = {k: extra[k] for k in cls.SETTINGS if k in extra}
    kwargs.update(policy_kwargs)
    tokenizer = load_tokenizer(path)
    # vlarl's tokenizers end with the action tokens; OpenVLA's Llama one has an added <PAD> above them
    default_vocab = len(tokenizer) if extra else tokenizer.vocab_size
    kwargs.setdefault("action_vocab_size", extra.get("action_vocab_size", default_vocab))
    policy = cls(model, tokenizer, norm, len(norm.q01), **kwargs)
    if "proprio" in stats[key] and model.proprio_projector is not None:
        policy.proprio_stats = ActionNormStats.from_dict(stats[key]["proprio"])
    heads_file = path / "vlarl_heads.safetensors"
    tensors = {**(load_file(heads_file) if heads_file.is_file() else {}), **extra_heads}
    for name, module in policy.heads().items():
        part = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}.")}
        if part or name == "proprio_projector":  # a missing value head, critic or action head starts fresh
            load_module(module, part, f"{path} ({name})")
    return policy


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(tensors)`` with an error that names the missing, unexpected or misshapen tensors."""
    want = module.state_dict()
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    shapes = [
        f"{k}: {list(tensors[k].shape)}, expected {list(want[k].shape)}"
        for k in want
        if k in tensors and tensors[k].shape != want[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(f"{where}: missing tensors {missing}, unexpected {unexpected}, wrong shapes {shapes}")
    module.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()})
