"""Per-env random streams: an env's draws do not depend on which envs share its batch (the placements' premise)."""

import pickle

import numpy as np
import pytest
import torch

from vlarl.policies.base import EnvGenerators, categorical, randn
from vlarl.policies.openvla.factory import build_policy
from vlarl.policies.openvla_oft import OFTPolicy

INSTRUCTIONS = ["move to the red disc", "move to the green disc", "move to the blue disc", "move to the red disc"]


def test_an_env_draws_the_same_in_any_batch_and_after_pickling():
    full = EnvGenerators(7, range(4), 3)
    normal = randn((4, 2, 3), full, "cpu")
    torch.testing.assert_close(randn((2, 2, 3), EnvGenerators(7, [2, 3], 3), "cpu"), normal[2:], atol=0, rtol=0)
    again = pickle.loads(pickle.dumps(EnvGenerators(7, range(4), 3)))
    torch.testing.assert_close(randn((4, 2, 3), again, "cpu"), normal, atol=0, rtol=0)
    assert not torch.equal(randn((4, 2, 3), EnvGenerators(7, range(4), 4), "cpu"), normal)  # the decision counts
    probs = torch.softmax(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), -1)
    picks = categorical(probs, EnvGenerators(1, range(4), 0))  # two rows per env
    assert torch.equal(categorical(probs[2:6], EnvGenerators(1, [1, 2], 0)), picks[2:6])
    with pytest.raises(ValueError, match="cannot be split evenly over 3 envs"):
        randn((4, 2), EnvGenerators(0, range(3), 0), "cpu")


def test_the_race_samples_the_distribution():
    probs = torch.tensor([[0.1, 0.6, 0.3]]).repeat(4000, 1)
    picks = categorical(probs, EnvGenerators(0, range(4000), 0))
    np.testing.assert_allclose(torch.bincount(picks, minlength=3).numpy() / 4000, [0.1, 0.6, 0.3], atol=0.03)


@pytest.mark.parametrize("cls", [None, OFTPolicy])
def test_a_policy_acts_the_same_for_an_env_alone_or_in_the_batch(cls):
    torch.manual_seed(0)
    kwargs = {} if cls is None else {"cls": cls, "chunk_len": 2}
    policy = build_policy("micro", 2, instructions=INSTRUCTIONS, **kwargs).eval()
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (4, 1, 64, 64, 3), dtype=np.uint8), "instruction": INSTRUCTIONS}
    full = policy.act(obs, generator=EnvGenerators(5, range(4), 2))
    part = policy.act({k: v[2:] for k, v in obs.items()}, generator=EnvGenerators(5, [2, 3], 2))
    assert torch.equal(part.tokens, full.tokens[2:]) and np.array_equal(part.actions, full.actions[2:])
    torch.testing.assert_close(part.logprob, full.logprob[2:], atol=1e-5, rtol=0)
