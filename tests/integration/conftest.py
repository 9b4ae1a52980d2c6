from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("metaworld") is None:  # find_spec: importing it would import mujoco before GL setup
    pytest.skip("the MetaWorld extra is not installed: pip install 'vlarl[metaworld]'", allow_module_level=True)


def env_cfg(**overrides):
    """An EnvConfig from the defaults plus ``key=value`` overrides (small images, few envs)."""
    from vlarl.config import load_config

    base = {
        "num_envs": 2,
        "num_workers": 0,
        "image_size": 32,
        "task_set": "custom",
        "tasks": "[reach-v3,push-v3]",
        "max_episode_steps": 30,
    }
    base.update(overrides)
    return load_config("demos", overrides=[f"env.{k}={v}" for k, v in base.items()]).env
