"""Vector envs: one interface (``base.VectorEnv``) over simulator backends.

``make(cfg)`` builds the backend ``cfg.backend`` and returns a ``SyncVectorEnv`` (``num_workers=0``)
or a ``SubprocVectorEnv`` (envs spread over ``num_workers`` processes, images in shared memory).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from vlarl.envs.base import EnvSpec, SyncVectorEnv, VectorEnv


def _lazy(module: str, name: str) -> Callable[[Any], Any]:
    """A factory that imports ``vlarl.envs.<module>`` on first call (a backend's extra may be missing)."""

    def make(arg: Any) -> Any:
        return getattr(importlib.import_module(f"vlarl.envs.{module}"), name)(arg)

    return make


_BACKENDS: dict[str, Callable[[Any], Any]] = {
    "metaworld": _lazy("metaworld", "MetaWorldBackend"),
    "libero": _lazy("libero", "LiberoBackend"),
    "maniskill": _lazy("maniskill", "ManiSkillBackend"),
    "toy": _lazy("toy", "ToyBackend"),
}
_EXPERTS: dict[str, Callable[[str], Any]] = {
    "metaworld": _lazy("metaworld", "MetaWorldExpert"),
    "maniskill": _lazy("maniskill", "ManiSkillExpert"),
    "toy": _lazy("toy", "ToyExpert"),
}


def register(name: str, backend: Callable[[Any], Any], expert: Callable[[str], Any] | None = None) -> None:
    """Register a backend factory ``cfg -> Backend`` (and optionally ``task -> expert policy``)."""
    _BACKENDS[name] = backend
    if expert is not None:
        _EXPERTS[name] = expert


def available() -> list[str]:
    return sorted(_BACKENDS)


def make_backend(cfg: Any):
    if cfg.backend not in _BACKENDS:
        raise ValueError(f"unknown env backend {cfg.backend!r}; known backends: {', '.join(available())}")
    try:
        return _BACKENDS[cfg.backend](cfg)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"env backend {cfg.backend!r} needs its extra: pip install 'vlarl[{cfg.backend}]' ({e})"
        ) from e


def make_expert(backend: str, task: str):
    """The scripted expert of ``task``: a callable ``state [S] -> action [A]``."""
    if backend not in _EXPERTS:
        raise ValueError(f"backend {backend!r} has no scripted experts; backends with experts: {sorted(_EXPERTS)}")
    return _EXPERTS[backend](task)


def make(cfg: Any) -> VectorEnv:
    """A vector env for ``cfg`` (an ``EnvConfig``)."""
    backend = make_backend(cfg)  # validates the config and picks the GL backend before workers start
    if cfg.num_workers <= 0:
        return SyncVectorEnv(backend, cfg)
    from vlarl.envs.subproc import SubprocVectorEnv

    return SubprocVectorEnv(cfg, backend.spec(cfg.num_envs))


__all__ = ["EnvSpec", "SyncVectorEnv", "VectorEnv", "available", "make", "make_backend", "make_expert", "register"]
