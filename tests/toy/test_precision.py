"""Under bf16 the update's old log-probs are the learner's own: every ratio starts at 1 (CPU bf16 autocast)."""

from __future__ import annotations

import pytest
import torch

from tests.toy.conftest import toy_train_config
from vlarl.trainer import Trainer


def test_bf16_update_starts_at_ratio_one_although_rollout_scores_differ(tmp_path, fresh_policy):
    # one minibatch holding every step: the loss is measured before any optimizer step
    cfg = toy_train_config(
        fresh_policy,
        "algo.name=ppo",
        "env.num_envs=6",
        "algo.epochs=1",
        "algo.minibatch_size=4096",
        "algo.grad_accum=1",
        "algo.critic_warmup=0",
        "policy.precision=bf16",
    )
    trainer = Trainer(cfg, tmp_path / "run")
    batch = trainer.collect()
    t_idx, b_idx = batch.mask.nonzero(as_tuple=True)
    learner = trainer.learner.rescore(batch, t_idx, b_idx, chunk=4096)[t_idx, b_idx]
    gap = (learner - batch.logprob[t_idx, b_idx]).abs()
    assert gap.max() > 1e-3, "rollout (fp32 decode) and learner (bf16) scores agree: the test has no teeth"
    metrics = trainer.update(batch, *trainer.advantages(batch))
    assert metrics["policy/ratio_max"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["policy/ratio_min"] == pytest.approx(1.0, abs=1e-5)
    assert abs(metrics["policy/approx_kl"]) < 1e-6


def test_fp32_rollout_scores_are_the_learners(tmp_path, fresh_policy):
    cfg = toy_train_config(fresh_policy, "algo.name=ppo", "env.num_envs=6", "policy.precision=fp32")
    trainer = Trainer(cfg, tmp_path / "run")
    batch = trainer.collect()
    t_idx, b_idx = batch.mask.nonzero(as_tuple=True)
    learner = trainer.learner.rescore(batch, t_idx, b_idx, chunk=64)[t_idx, b_idx]
    torch.testing.assert_close(learner, batch.logprob[t_idx, b_idx], atol=1e-5, rtol=0)
