"""The learner group (2 Ray actors of torch.distributed, gloo; FSDP2 and DDP) against the serial learner on one toy
batch: the same update, the same metrics; a checkpoint resumes it exactly; a dead rank stops the run with a clear
error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.toy.conftest import toy_train_config
from vlarl.distributed.learner_group import LearnerGroup
from vlarl.envs import toy
from vlarl.policies import make_policy
from vlarl.trainer import Trainer

pytest.importorskip("ray")
OVERRIDES = ("algo.name=ppo", "env.num_envs=4", "env.reward=dense", "algo.minibatch_size=16", "algo.epochs=2")


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def toy_batch(tmp_path_factory, fresh_policy):
    """A PPO batch of 4 toy episodes with its advantages, and the serial learner's update of it."""
    trainer = Trainer(toy_train_config(fresh_policy, *OVERRIDES), tmp_path_factory.mktemp("serial"))
    batch = trainer.collect()
    adv, ret = trainer.advantages(batch)
    metrics = trainer.learner.update(batch, adv, ret, np.random.default_rng(7), False)
    trainer.venv.close()
    return batch, adv, ret, metrics, trainer.policy.state_dict()


def _group(fresh_policy, *extra):
    cfg = toy_train_config(fresh_policy, *OVERRIDES, "placement.learner_ranks=2", *extra)
    policy = make_policy(dataclasses.replace(cfg.policy, checkpoint=str(fresh_policy)), toy.ACTION_DIM, 0)
    return LearnerGroup(policy, cfg, str(fresh_policy), (toy.ACTION_DIM, 0), cfg.trainer.temperature), policy


def _assert_same(state, expected, atol=2e-6):
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, atol=atol, rtol=0, msg=key)


def _assert_serial(state, serial_state, lr=3e-4):
    """Within 2% of the learning rate per element of the serial update (Adam moves an element by about lr at most,
    and where its gradient is near 0, float summation order flips part of that step: measured up to 3.7e-6 at
    lr 3e-4), but the attention key biases: they get no gradient in exact arithmetic (softmax is shift-invariant),
    so Adam turns their float noise into steps of about lr that no summation order reproduces."""
    gradient_free = {k for k in serial_state if k.endswith("k_proj.bias")}
    _assert_same(state, {k: v for k, v in serial_state.items() if k not in gradient_free}, atol=0.02 * lr)
    _assert_same(state, {k: serial_state[k] for k in gradient_free}, atol=lr)


@pytest.mark.parametrize("strategy", ["fsdp2", "ddp"])
def test_two_ranks_update_as_the_serial_learner_and_resume_exactly(
    ray_session, fresh_policy, toy_batch, tmp_path, strategy
):
    batch, adv, ret, serial_metrics, serial_state = toy_batch
    group, policy = _group(fresh_policy, f"placement.learner_strategy={strategy}")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    metrics = group.update(batch, adv, ret, np.random.default_rng(7), False)
    group.sync()
    state = policy.state_dict()
    moved = max((state[k] - before[k]).abs().max().item() for k in state)
    assert moved > 1e-4  # the update changed the weights, so the comparison has teeth
    _assert_serial(state, serial_state)
    step = torch.cat([(serial_state[k] - before[k]).flatten() for k in before])
    gap = torch.cat([(state[k] - serial_state[k]).flatten() for k in before])
    assert gap.norm() < 1e-2 * step.norm()  # the update as a whole is the serial one
    for key in ("policy/loss", "value/loss", "policy/approx_kl", "grad_norm"):
        assert metrics[key] == pytest.approx(serial_metrics[key], rel=1e-4, abs=1e-6), key
    assert metrics["samples"] == serial_metrics["samples"] and metrics["steps_taken"] == 1.0

    group.save(tmp_path / "ckpt")
    group.update(batch, adv, ret, np.random.default_rng(8), False)
    group.sync()
    uninterrupted = {k: v.clone() for k, v in policy.state_dict().items()}
    group.close()

    resumed, resumed_policy = _group(fresh_policy, f"placement.learner_strategy={strategy}")
    resumed.load(tmp_path / "ckpt")  # weights, Adam's moments, the schedule
    resumed.update(batch, adv, ret, np.random.default_rng(8), False)
    resumed.sync()
    _assert_same(resumed_policy.state_dict(), uninterrupted, atol=0)

    import ray

    ray.kill(resumed.ranks[1])
    with pytest.raises(RuntimeError, match="a learner rank died.*resume it from its last checkpoint"):
        resumed.update(batch, adv, ret, np.random.default_rng(9), False)


def test_the_trainer_steps_syncs_and_checkpoints_with_a_learner_group(ray_session, fresh_policy, tmp_path):
    """One iteration of ``Trainer.step`` with 2 ranks: the update lands in the rollout policy (sync_weights), the
    checkpoint is the serial layout and loads into a serial trainer."""
    cfg = toy_train_config(fresh_policy, *OVERRIDES, "placement.learner_ranks=2")
    trainer = Trainer(cfg, tmp_path / "run")
    assert isinstance(trainer.learner, LearnerGroup)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    row = trainer.step()
    assert row["timing/sync_weights"] > 0 and row["train/samples"] > 0
    moved = max((trainer.policy.state_dict()[k] - before[k]).abs().max().item() for k in before)
    assert moved > 1e-4
    path = trainer.save()
    trainer.learner.close()
    trainer.venv.close()
    serial = Trainer(toy_train_config(fresh_policy, *OVERRIDES), tmp_path / "serial")
    serial.policy.load(path / "policy")
    _assert_same(serial.policy.state_dict(), trainer.policy.state_dict(), atol=0)
    serial.venv.close()


def test_a_reference_copy_is_refused_with_several_ranks(fresh_policy):
    with pytest.raises(ValueError, match="algo.kl_coef > 0 keeps a reference copy"):
        _group(fresh_policy, "algo.kl_coef=0.1")


def test_learner_ranks_spread_over_two_raylets_of_a_local_cluster(fresh_policy, toy_batch, monkeypatch):
    """placement.ray_address joins an existing cluster: a head and a second raylet of one CPU each (as `ray start
    --head` / `ray start --address` would make), so the two ranks land on different nodes and still update as the
    serial learner does."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        group, policy = _group(fresh_policy, f"placement.ray_address={cluster.address}")
        assert len({ray.get(rank.node.remote()) for rank in group.ranks}) == 2
        batch, adv, ret, _, serial_state = toy_batch
        group.update(batch, adv, ret, np.random.default_rng(7), False)
        group.sync()
        _assert_serial(policy.state_dict(), serial_state)
        group.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
