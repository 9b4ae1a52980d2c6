"""Typed configs per component, YAML presets and dotted overrides (see ``loader``)."""

from vlarl.config.loader import ConfigError, describe, load_config, save_config
from vlarl.config.schema import COMMANDS, DemosCommand, DemosConfig, EnvConfig, RunConfig

__all__ = [
    "COMMANDS",
    "ConfigError",
    "DemosCommand",
    "DemosConfig",
    "EnvConfig",
    "RunConfig",
    "describe",
    "load_config",
    "save_config",
]
