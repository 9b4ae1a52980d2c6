"""Run folders and config fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from vlarl.config.loader import save_config


def config_hash(*sections: Any) -> str:
    """A short stable fingerprint of dataclass sections or plain dicts (used to reuse cached artefacts)."""
    blob = json.dumps([dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def at_defaults(section: Any, *flags: str) -> Any:
    """A copy of config dataclass ``section`` with every field whose metadata sets one of ``flags`` (e.g.
    ``"rl_only"``, recursively) at its default: runs that differ only in such fields share one cached artefact."""
    changes = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if any(f.metadata.get(flag) for flag in flags):
            changes[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        elif dataclasses.is_dataclass(value):
            changes[f.name] = at_defaults(value, *flags)
    return dataclasses.replace(section, **changes)


def make_run_dir(cfg: Any, command: str, preset: str | None) -> Path:
    """Create ``<output_dir>/<name>`` and write the resolved config there as ``config.yaml``."""
    name = cfg.run.name or f"{command}-{preset or 'custom'}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(cfg.run.output_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / "config.yaml")
    return path
