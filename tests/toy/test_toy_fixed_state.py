"""The CI-sized fixed-state proof: the real trainer, from a short SFT, drives rollout success up on fixed
(task, initial state) groups of the toy env, for PPO and for GRPO (benchmarks/fixed_state.py is the full one).

Transitions are deterministic given the actions, so on fixed states RL is a small stationary problem: a
collector, advantage step or update that hands a pure function wrong inputs shows up here as a flat or
falling curve (GRPO with ``step_weight=step`` measured flat: 0.27 -> 0.23, its entropy rising 2.3 -> 4.1).
"""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from tests.toy.conftest import toy_train_config
from vlarl.config import load_config
from vlarl.sft import run_sft
from vlarl.trainer import Trainer

STATES = "[reach-red@1,reach-green@2,reach-blue@3,reach-red@4,reach-green@5,reach-blue@6]"
ITERATIONS = 25


@pytest.fixture(scope="module")
def sft_policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    cfg = load_config("sft", "toy_micro", overrides=[f"demos.output={root / 'demos'}", f"run.output_dir={root}"])
    return run_sft(cfg, root / "sft", Console(quiet=True))


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_rl_drives_success_up_on_fixed_states(tmp_path, sft_policy, algo):
    cfg = load_config(
        "train",
        "toy_micro",
        overrides=[
            f"algo.name={algo}",
            "trainer.init=checkpoint",
            f"policy.checkpoint={sft_policy}",
            f"trainer.fixed_states={STATES}",
            f"run.output_dir={tmp_path}",
        ],
    )
    trainer = Trainer(cfg, tmp_path / algo)
    rows = [trainer.step() for _ in range(ITERATIONS)]
    success = np.array([r["rollout/success"] for r in rows])
    entropy = np.array([r["train/policy/entropy"] for r in rows])
    start, end = success[:3].mean(), success[-5:].mean()
    print(f"{algo}: rollout success {np.round(success, 2).tolist()}")
    assert rows[0]["rollout/episodes"] == 48  # six groups of eight, every iteration
    assert 0.1 <= start <= 0.5, "the SFT start is not a partial policy: the proof needs room to climb"
    assert end >= start + 0.2, f"{algo} did not learn fixed states: {start:.2f} -> {end:.2f}"
    assert entropy[-5:].mean() < entropy[:3].mean() + 0.5  # it sharpens on what worked instead of spreading


@pytest.mark.parametrize("target_kl", [0.0, 1e-9])
def test_target_kl_stops_the_update_before_the_step_that_leaves_the_trust_region(tmp_path, fresh_policy, target_kl):
    overrides = ["algo.name=ppo", "algo.critic_warmup=0", "algo.epochs=3", "algo.minibatch_size=16", "env.num_envs=8"]
    cfg = toy_train_config(fresh_policy, *overrides, f"algo.target_kl={target_kl}")
    trainer = Trainer(cfg, tmp_path / "run")
    row = trainer.step()
    minibatches = cfg.algo.epochs * -(-row["train/samples"] // cfg.algo.minibatch_size)
    # the first minibatch sees the rollout policy itself (approx-KL 0), every later one a moved policy (> 1e-9)
    expected = minibatches if target_kl == 0 else 1
    assert row["train/steps_taken"] == pytest.approx(expected / minibatches)
    assert trainer.learner.scheduler.last_epoch == expected  # optimizer steps actually taken
