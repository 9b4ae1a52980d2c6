"""Fixtures of the toy-env trainer tests (no simulator extra needed)."""

from __future__ import annotations

import pytest
import torch

from vlarl.config import load_config
from vlarl.envs import toy
from vlarl.policies.openvla.checkpoint import save_pretrained
from vlarl.policies.openvla.factory import build_policy


@pytest.fixture(scope="session")
def fresh_policy(tmp_path_factory):
    """A randomly initialised micro policy for the toy tasks, saved in the OpenVLA layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fresh") / "policy"
    save_pretrained(build_policy("micro", toy.ACTION_DIM, instructions=list(toy.INSTRUCTIONS.values())), path)
    return path


def _fresh_chunk_policy(tmp_path_factory, cls, name):
    """A randomly initialised micro ``cls`` policy acting in chunks of 2 toy actions, saved under ``name``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(name) / "policy"
    instructions = list(toy.INSTRUCTIONS.values())
    build_policy("micro", toy.ACTION_DIM, instructions=instructions, cls=cls, chunk_len=2).save(path)
    return path


@pytest.fixture(scope="session")
def fresh_oft_policy(tmp_path_factory):
    """A micro OpenVLA-OFT policy decoding chunks of 2 toy actions."""
    from vlarl.policies.openvla_oft import OFTPolicy

    return _fresh_chunk_policy(tmp_path_factory, OFTPolicy, "fresh_oft")


@pytest.fixture(scope="session")
def fresh_pi0_policy(tmp_path_factory):
    """A micro pi0 policy denoising chunks of 2 toy actions."""
    from vlarl.policies.pi0 import Pi0Policy

    return _fresh_chunk_policy(tmp_path_factory, Pi0Policy, "fresh_pi0")


OFT = ("policy.family=openvla_oft", "policy.openvla_oft.chunk_len=2")
PI0 = ("policy.family=pi0", "policy.pi0.chunk_len=2")


def toy_train_config(start, *overrides):
    """The toy_micro preset's train config starting from checkpoint ``start``."""
    return load_config(
        "train", "toy_micro", overrides=["trainer.init=checkpoint", f"policy.checkpoint={start}", *overrides]
    )
