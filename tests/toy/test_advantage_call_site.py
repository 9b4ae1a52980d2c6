"""The trainer hands REINFORCE++ the collector's rewards, episode ends and mask (its call site, checked by hand)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tests.toy.conftest import OFT, toy_train_config
from vlarl.policies.base import GREEDY
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
            acc = batch.reward[t, b, 0].item() + 0.9 * acc
            returns[(t, b)] = acc
    mean = sum(returns.values()) / len(returns)
    std = math.sqrt(sum((g - mean) ** 2 for g in returns.values()) / len(returns))
    assert len(set(returns.values())) > 4  # dense rewards: the returns differ, the check has teeth
    for (t, b), g in returns.items():
        assert adv[t, b, 0].item() == pytest.approx((g - mean) / std, rel=1e-4, abs=1e-5)
    assert adv.shape == (*batch.mask.shape, 1) and (adv[~batch.mask] == 0).all()


@pytest.mark.parametrize("logprob", ["action", "token"])
def test_action_granularity_gae_through_the_trainer_runs_over_env_steps(tmp_path, fresh_oft_policy, logprob):
    """OFT chunks of 2 at reward_granularity=action: the trainer's GAE is a plain loop over each episode's env
    steps with the value head's per-step values, and the learner's update takes it."""
    overrides = [*OFT, "algo.name=ppo", "env.num_envs=4", "env.reward=dense", "algo.norm_adv=false"]
    overrides += ["env.max_episode_steps=11"]  # an odd limit: a truncation inside a chunk
    overrides += ["algo.reward_granularity=action", f"algo.logprob_granularity={logprob}", "algo.gamma=0.9"]
    trainer = Trainer(toy_train_config(fresh_oft_policy, *overrides, "algo.lam=0.8"), tmp_path / "run")
    venv, finals = trainer.venv, {}

    def step_chunk(actions):  # keep the final observation of every truncated episode
        obs, reward, term, trunc, info = venv.step_chunk(actions)
        for b in np.flatnonzero(trunc.any(1)):
            finals.setdefault(int(b), {k: info[f"final_{k}"][b : b + 1] for k in ("image", "proprio")})
        return obs, reward, term, trunc, info

    trainer.venv = SimpleNamespace(spec=venv.spec, reset=venv.reset, step_chunk=step_chunk)
    batch = trainer.collect()
    adv, ret = trainer.advantages(batch)
    valid = batch.valid
    assert adv.shape == valid.shape and (adv[~valid] == 0).all() and (ret[~valid] == 0).all()
    assert ((batch.steps > 0) & (batch.steps < 2)).any()  # an episode ended inside its chunk
    for b in range(4):
        r, v, nv = (x[:, b][valid[:, b]].tolist() for x in (batch.reward, batch.value, batch.next_value))
        assert nv[:-1] == v[1:]  # inside the episode V after a step is the next step's value, across chunks too
        end = 0.0
        if batch.truncated[:, b].any():  # bootstrap: V of the cut episode's last observation, at its last step
            final = {**finals[b], "instruction": batch.instruction[b : b + 1]}
            end = trainer.policy.act(final, GREEDY).value[0, 0].item()
        assert nv[-1] == pytest.approx(end, abs=1e-6)
        want, last = [0.0] * len(r), 0.0
        for i in reversed(range(len(r))):
            nxt = v[i + 1] if i + 1 < len(r) else end
            last = r[i] + 0.9 * nxt - v[i] + 0.9 * 0.8 * last * (i + 1 < len(r))
            want[i] = last
        assert adv[:, b][valid[:, b]].tolist() == pytest.approx(want, rel=1e-4, abs=1e-5)
    metrics = trainer.update(batch, adv, ret)
    assert metrics["update_skipped"] == 0.0 and math.isfinite(metrics["value/loss"])
    venv.close()
