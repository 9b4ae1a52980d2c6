"""The trainer hands REINFORCE++ the collector's rewards, episode ends and mask (its call site, checked by hand)."""

from __future__ import annotations

import math

import pytest

from tests.toy.conftest import toy_train_config
from vlarl.trainer import Trainer


def test_reinforce_pp_through_the_trainer_is_the_masked_return_to_go_whitened(tmp_path, fresh_policy):
    overrides = ["algo.name=ppo", "algo.advantage=reinforce_pp", "env.num_envs=4", "env.reward=dense"]
    trainer = Trainer(toy_train_config(fresh_policy, *overrides, "algo.gamma=0.9"), tmp_path / "run")
    batch = trainer.collect()
    adv, _ = trainer.advantages(batch)
    returns = {}  # (t, b) -> discounted return-to-go within the episode, by a plain loop
    for b in range(4):
        steps = [t for t in range(batch.mask.shape[0]) if batch.mask[t, b]]
        acc = 0.0
        for t in reversed(steps):
            acc = batch.reward[t, b].item() + 0.9 * acc
            returns[(t, b)] = acc
    mean = sum(returns.values()) / len(returns)
    std = math.sqrt(sum((g - mean) ** 2 for g in returns.values()) / len(returns))
    assert len(set(returns.values())) > 4  # dense rewards: the returns differ, the check has teeth
    for (t, b), g in returns.items():
        assert adv[t, b].item() == pytest.approx((g - mean) / std, rel=1e-4, abs=1e-5)
    assert (adv[~batch.mask] == 0).all()
