"""The collector's ``next_value`` and the trainer's advantage step on a real MetaWorld rollout, checked by hand.

One env follows MetaWorld's scripted expert (its episode terminates on success), one holds still (its episode
is truncated at the env's step limit), and a third run cuts both by the collector's own step budget. The
values come from the tiny policy's (random) value head, so every step's value differs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vlarl.envs.metaworld import MetaWorldExpert
from vlarl.policies.base import GREEDY, SAMPLE
from vlarl.policies.openvla.checkpoint import save_pretrained
from vlarl.policies.openvla.factory import build_policy
from vlarl.rollout.collector import collect_episodes
from vlarl.trainer import Trainer

GAMMA, LAM = 0.9, 0.8
LIMIT = 60  # env step limit: the expert solves reach-v3 from this state in 44 steps


class ExpertOnEnv0:
    """The real policy's outputs (tokens, log-probs, values); env 0's actions replaced by the scripted expert's."""

    def __init__(self, policy):
        self.policy, self.expert = policy, MetaWorldExpert("reach-v3")
        self.device, self.chunk_len = policy.device, policy.chunk_len

    def act(self, obs, sampling=SAMPLE, generator=None):
        out = self.policy.act(obs, sampling, generator)
        if "state" not in obs:  # a bootstrap value call on final observations: only the value is read
            return out
        actions = np.zeros_like(out.actions)
        actions[0, 0] = self.expert(obs["state"][0])
        return dataclasses.replace(out, actions=actions)


class RecordFinal:
    """Passes a vector env through, keeping the final observation of every truncated episode."""

    def __init__(self, venv):
        self.venv, self.spec, self.final = venv, venv.spec, {}

    def reset(self, seed=None, options=None):
        self.t = 0
        return self.venv.reset(seed=seed, options=options)

    def step_chunk(self, actions):
        obs, reward, term, trunc, info = self.venv.step_chunk(actions)
        for b in np.flatnonzero(trunc.any(1)):
            self.final.setdefault(b, {k: info[f"final_{k}"][b] for k in ("image", "proprio")})
        self.t += 1
        return obs, reward, term, trunc, info


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from vlarl.config import load_config

    torch.manual_seed(0)
    start = tmp_path_factory.mktemp("start") / "policy"
    save_pretrained(build_policy("tiny", 4, instructions=["reach the goal position"]), start)
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "train",
        overrides=[
            "env.task_set=MT1",
            "env.tasks=[reach-v3]",
            "env.num_envs=2",
            "env.num_workers=0",
            "env.image_size=32",
            f"env.max_episode_steps={LIMIT}",
            "trainer.init=checkpoint",
            f"policy.checkpoint={start}",
            f"run.output_dir={out}",
            f"algo.gamma={GAMMA}",
            f"algo.lam={LAM}",
            "algo.norm_adv=false",
        ],
    )
    trainer = Trainer(cfg, out / "run")
    yield trainer
    trainer.venv.close()


def _final_value(policy, final, instruction):
    obs = {"image": final["image"][None], "proprio": final["proprio"][None], "instruction": [instruction]}
    return policy.act(obs, GREEDY).value[0, 0].item()


def _hand_gae(reward, value, next_value_at_end, terminated_at_end):
    """Slow GAE of one episode (lists of floats): V(s_{t+1}) is the next step's value, then the end's bootstrap."""
    n = len(reward)
    adv, last = [0.0] * n, 0.0
    for t in reversed(range(n)):
        nxt = value[t + 1] if t + 1 < n else (0.0 if terminated_at_end else next_value_at_end)
        last = reward[t] + GAMMA * nxt - value[t] + GAMMA * LAM * last * (t + 1 < n)
        adv[t] = last
    return adv


def _check_episode(batch, adv, ret, b, end_value, terminated):
    n = int(batch.length[b])
    value = batch.value[:n, b, 0].tolist()  # K = 1: one env step per decision
    nv = batch.next_value[:, b, 0]
    assert nv[: n - 1].tolist() == pytest.approx(value[1:n], abs=0)  # inside the episode: V(s_{t+1})
    assert nv[n - 1].item() == pytest.approx(end_value, abs=1e-6)
    assert not nv[n:].any()  # steps outside the episode carry nothing
    assert bool(batch.terminated[n - 1, b]) is terminated and bool(batch.truncated[n - 1, b]) is not terminated
    want = _hand_gae(batch.reward[:n, b, 0].tolist(), value, end_value, terminated)
    assert adv[:n, b, 0].tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert ret[:n, b, 0].tolist() == pytest.approx([a + v for a, v in zip(want, value)], rel=1e-5, abs=1e-6)
    assert not adv[n:, b].any() and not ret[n:, b].any()


def test_next_value_and_gae_at_termination_and_truncation(trainer):
    policy = trainer.policy
    venv = RecordFinal(trainer.venv)
    instruction = trainer.venv.spec.instructions["reach-v3"]
    batch = collect_episodes(ExpertOnEnv0(policy), venv, ["reach-v3"] * 2, [3, 3], [0, 0], seed=5, max_steps=LIMIT)
    assert batch.success.tolist() == [True, False]
    assert 2 < batch.length[0] < LIMIT and batch.length[1] == LIMIT
    adv, ret = trainer.advantages(batch)
    _check_episode(batch, adv, ret, 0, 0.0, terminated=True)
    bootstrap = _final_value(policy, venv.final[1], instruction)
    _check_episode(batch, adv, ret, 1, bootstrap, terminated=False)
    # the bootstrap reads the cut episode's last observation, not the auto-reset one
    assert bootstrap != pytest.approx(batch.value[LIMIT - 1, 1, 0].item(), abs=1e-6)


def test_collector_step_budget_cut_bootstraps_from_the_last_observation(trainer):
    policy = trainer.policy
    obs_log = []

    class Log(RecordFinal):
        def step_chunk(self, actions):
            out = super().step_chunk(actions)
            obs_log.append({k: out[0][k].copy() for k in ("image", "proprio")})
            return out

    budget = 4  # below the expert's steps to success and the env's limit: both episodes are cut by the collector
    batch = collect_episodes(ExpertOnEnv0(policy), Log(trainer.venv), ["reach-v3"] * 2, [3, 3], [0, 0], 5, budget)
    assert batch.length.tolist() == [budget, budget] and not batch.terminated.any()
    adv, ret = trainer.advantages(batch)
    instruction = trainer.venv.spec.instructions["reach-v3"]
    for b in range(2):
        last = {k: v[b] for k, v in obs_log[-1].items()}
        _check_episode(batch, adv, ret, b, _final_value(policy, last, instruction), terminated=False)
