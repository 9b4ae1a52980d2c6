"""Compose a command's config: dataclass defaults < preset YAML < --config file < dotted overrides.

OmegaConf does the merging and type checks; this module turns its errors into messages that name
the offending key path and, for unknown keys, the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlarl.config.schema import COMMANDS
from vlarl.utils.io import atomic_write_text


class ConfigError(ValueError):
    """A config could not be built; the message says which key and what is valid."""


def available_presets() -> list[str]:
    files = resources.files("vlarl.config").joinpath("presets").iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def _read_preset(name: str) -> dict:
    if name not in available_presets():
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(available_presets())}")
    text = resources.files("vlarl.config").joinpath("presets", f"{name}.yaml").read_text()
    return OmegaConf.to_container(OmegaConf.create(text))


def _read_yaml(path: str) -> dict:
    if not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    data = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _all_sections() -> set[str]:
    return {f.name for cls in COMMANDS.values() for f in dataclasses.fields(cls)}


def _for_command(layer: dict, root: type, source: str) -> dict:
    """Keep the sections ``root`` has; sections of other commands are dropped, others are errors."""
    own = {f.name for f in dataclasses.fields(root)}
    for key in layer:
        if key not in _all_sections():
            raise ConfigError(_unknown_key_message(key, sorted(_all_sections()), f"{source}: top level"))
    return {k: v for k, v in layer.items() if k in own}


def _unknown_key_message(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r} in {where}{hint}; valid keys: {', '.join(valid)}"


def _check_keys(layer: dict, cls: type, prefix: str, source: str) -> None:
    """Raise ConfigError for keys of ``layer`` that the dataclass ``cls`` does not declare."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    for key, value in layer.items():
        if key not in fields:
            where = f"{source}: section {prefix.rstrip('.') or 'top level'}"
            raise ConfigError(_unknown_key_message(key, sorted(fields), where))
        if dataclasses.is_dataclass(fields[key]) and isinstance(value, dict):
            _check_keys(value, fields[key], f"{prefix}{key}.", source)


def _overrides_to_dict(overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. env.num_envs=8)")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))


def load_config(
    command: str,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] = (),
    base: dict | None = None,
) -> Any:
    """Return the root dataclass of ``command`` with every layer merged and validated.

    ``base`` (sections as a dict, e.g. the env a checkpoint was trained on) goes under the preset.
    """
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    root = COMMANDS[command]
    layers = []
    if base:
        layers.append((_for_command(base, root, "checkpoint run config"), "checkpoint run config"))
    if preset:
        layers.append((_for_command(_read_preset(preset), root, f"preset {preset}"), f"preset {preset}"))
    if config_file:
        layers.append((_for_command(_read_yaml(config_file), root, config_file), config_file))
    if overrides:
        layers.append((_overrides_to_dict(list(overrides)), "command-line overrides"))
    merged = OmegaConf.structured(root)
    for layer, source in layers:
        _check_keys(layer, root, "", source)
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            reason = str(e).splitlines()[0]
            raise ConfigError(f"{source}: bad value for {key}: {reason}") from None
    cfg = OmegaConf.to_object(merged)
    validate(cfg)
    return cfg


_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_BOUND_OK = {"ge": float.__ge__, "gt": float.__gt__, "le": float.__le__, "lt": float.__lt__}


def _field_problems(cfg: Any, prefix: str = "") -> list[str]:
    """``key=value: what is valid`` for every field of ``cfg`` (recursively) outside its declared choices/bounds."""
    problems = []
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += _field_problems(value, f"{key}.")
            continue
        choices, rule, bounds = f.metadata.get("choices"), f.metadata.get("rule"), f.metadata.get("bounds", {})
        if choices is not None and value not in choices:
            problems.append(f"{key}={value!r}: choose one of {', '.join(repr(c) for c in choices)}")
        if rule is not None and not rule[0](value):
            problems.append(f"{key}={value!r}: must be {rule[1]}")
        limits = {k: v for k, v in bounds.items() if v is not None}
        if limits and not all(_BOUND_OK[k](float(value), float(v)) for k, v in limits.items()):
            valid = " and ".join(f"{_BOUND_TEXT[k]} {v:g}" for k, v in limits.items())
            problems.append(f"{key}={value!r}: must be {valid}")
    return problems


def _cross_problems(cfg: Any) -> list[str]:
    """Constraints between sections of one command's config."""
    problems = []
    algo, env, ev = (getattr(cfg, name, None) for name in ("algo", "env", "eval"))
    if algo is not None and algo.name == "grpo" and env.num_envs % algo.group_size:
        problems.append(f"env.num_envs={env.num_envs}: must be a multiple of algo.group_size={algo.group_size} (grpo)")
    if algo is not None and algo.reward_granularity == "action" and algo.logprob_granularity == "chunk":
        problems.append(
            "algo.reward_granularity='action': each action has its own advantage, so its ratio cannot be the "
            "chunk's; set algo.logprob_granularity to 'action' or 'token'"
        )
    if algo is not None and algo.ds_low > algo.ds_high:
        problems.append(f"algo.ds_low={algo.ds_low}: must be <= algo.ds_high={algo.ds_high}")
    if env is not None and env.reward == "shaped" and env.backend != "metaworld":
        problems.append(
            f"env.reward='shaped': only the metaworld backend shapes its reward (use 'dense' on {env.backend})"
        )
    if env is not None and env.gripper != "env" and env.backend != "libero":
        problems.append(f"env.gripper={env.gripper!r}: only the libero backend converts the gripper (use 'env')")
    demos = getattr(cfg, "demos", None)
    if demos is not None and demos.source and env.backend != "libero":
        problems.append(f"demos.source={demos.source!r}: importing demo files needs env.backend=libero")
    policy = getattr(cfg, "policy", None)
    if algo is not None and policy.family == "openvla_oft" and policy.openvla_oft.action_head == "l1":
        problems.append(
            "policy.openvla_oft.action_head='l1': RL trains the discrete head; start RL from an L1 fine-tune with "
            "action_head=discrete after a short `vlarl sft` of that head on demos (README, OpenVLA-OFT)"
        )
    if policy is not None and env is not None and policy.family in ("openvla_oft", "pi0"):
        k = getattr(policy, policy.family).chunk_len
        if k > env.max_episode_steps:
            problems.append(
                f"policy.{policy.family}.chunk_len={k}: must be <= env.max_episode_steps={env.max_episode_steps} "
                "(a chunk runs within one episode)"
            )
    if ev is not None and env is not None and ev.trials_per_task > env.num_eval_init_states:
        problems.append(
            f"eval.trials_per_task={ev.trials_per_task}: must be <= env.num_eval_init_states={env.num_eval_init_states}"
        )
    return problems + _placement_problems(getattr(cfg, "placement", None), env)


def _placement_problems(placement: Any, env: Any) -> list[str]:
    """How the envs split over workers and stages (resources are checked against the cluster at start:
    vlarl.distributed.placement)."""
    if placement is None or placement.mode == "serial":
        return []
    workers, stages, n = placement.env_workers, placement.pipeline_stages, env.num_envs
    if n % workers:
        return [f"placement.env_workers={workers}: must divide env.num_envs={n} (each worker steps n / workers envs)"]
    if placement.mode == "hybrid" and (stages < 2 or (n // workers) % stages):
        return [
            f"placement.pipeline_stages={stages}: hybrid needs >= 2 stages dividing the {n // workers} envs of each "
            f"env worker (env.num_envs={n} / placement.env_workers={workers})"
        ]
    if placement.mode != "hybrid" and stages != 1:
        return [f"placement.pipeline_stages={stages}: only mode 'hybrid' pipelines stages; set 1 or mode=hybrid"]
    return []


def validate(cfg: Any) -> None:
    """Raise ConfigError listing every field outside its choices or range, and every broken cross-constraint."""
    problems = _field_problems(cfg)
    problems += [] if problems else _cross_problems(cfg)  # cross checks assume each field is valid on its own
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if not typing.get_args(tp) else str(tp).replace("typing.", "")


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows (dotted key, type, default, help) for every leaf field of the dataclass ``cls``."""
    rows = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", _type_name(tp), repr(getattr(instance, f.name)), f.metadata["help"]))
    return rows
