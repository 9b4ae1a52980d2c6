"""Ray placements collect what serial collects and update alike (toy env, micro policy; one Ray session).

For the same seed every mode's batch equals serial's: tokens, actions, rewards, flags and images bitwise (each env
draws from its own stream, so how envs are batched does not matter); log-probs and values within 1e-5 (the
rollout worker runs the forward pass with 1 thread and on other batch shapes than the learner's process); a flow
policy's continuous actions, denoising chains and the dense rewards that follow from them within 1e-5 too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.toy.conftest import PI0, toy_train_config
from vlarl.trainer import Trainer

ray = pytest.importorskip("ray", reason="the Ray placements need the ray extra: pip install 'vlarl[ray]'")

EXACT = ("action_tokens", "actions", "reward", "terminated", "truncated", "mask", "steps", "policy_version", "success")
CLOSE = ("logprob", "value", "next_value")
MODES = {  # 8 envs on the 2 CPUs of a local Ray instance
    "collocated": ("placement.env_workers=2", "placement.rollout_cpus=2"),
    "disaggregated": ("placement.env_workers=2", "placement.env_cpus=0.5"),
    "hybrid": ("placement.env_workers=2", "placement.pipeline_stages=2", "placement.env_cpus=0.5"),
}


def config(start, mode, *overrides):
    return toy_train_config(start, "env.num_envs=8", "env.reward=dense", f"placement.mode={mode}", *overrides)


def assert_same_batch(placed, serial, close=CLOSE):
    for key in (k for k in EXACT if k not in close):
        assert torch.equal(getattr(placed, key), getattr(serial, key)), key
    for key in close:
        torch.testing.assert_close(getattr(placed, key), getattr(serial, key), atol=1e-5, rtol=0, msg=key)
    assert np.array_equal(placed.image, serial.image) and placed.task == serial.task


@pytest.fixture(scope="module")
def ray_session():
    from vlarl.config.schema import PlacementConfig
    from vlarl.distributed.placement import start_ray

    start_ray(PlacementConfig(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def serial_batch(fresh_policy, tmp_path_factory):
    trainer = Trainer(config(fresh_policy, "serial"), tmp_path_factory.mktemp("serial"))
    trainer.iteration = 4  # as after four updates: the seeds and the version of iteration 4
    batch = trainer.collect()
    trainer.close()
    assert batch.truncated.any() and batch.terminated.any()  # both ends and their bootstraps are compared
    return batch


@pytest.fixture(scope="module")
def placed(ray_session, fresh_policy, tmp_path_factory):
    """The trainer of a mode (from ``start`` with ``extra`` overrides), kept for the next test that asks the same;
    one at a time (the 2 CPUs hold one placement)."""
    trainers = {}

    def get(mode, *extra, start=fresh_policy):
        key = (mode, start, *extra)
        if key not in trainers:
            for other in trainers.values():
                other.close()
            trainers.clear()
            trainers[key] = Trainer(config(start, mode, *MODES[mode], *extra), tmp_path_factory.mktemp(mode))
        return trainers[key]

    yield get
    for trainer in trainers.values():
        trainer.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_collects_the_serial_batch(placed, serial_batch, mode):
    trainer = placed(mode)
    trainer.iteration = 4
    assert_same_batch(trainer.collect(), serial_batch)
    assert trainer.collector.version == 4  # synced to the learner's weights of iteration 4 before collecting
    info = ray.get(trainer.collector.rollout.info.remote())
    assert info["version"] == 4 and info["threads"] == (2 if mode == "collocated" else 1)  # the thread plan


def test_a_killed_env_worker_is_restarted_and_the_batch_is_unchanged(placed, serial_batch):
    trainer = placed("hybrid")
    trainer.iteration = 4
    collector, venv = trainer.collector, trainer.venv
    fetch, fetched, killed = collector._fetch, [], []

    def kill_at_third(decision):
        fetched.append(1)
        if len(fetched) == 3:  # decisions 2 and 3 are in flight
            killed.append(venv.actors[0])
            ray.kill(venv.actors[0])
        return fetch(decision)

    collector._fetch = kill_at_third
    try:
        batch = trainer.collect()
    finally:
        del collector._fetch
    assert venv.restarts == 1 and venv.actors[0] is not killed[0]
    assert_same_batch(batch, serial_batch)  # no transition lost or repeated
    ray.kill(venv.actors[1])  # between collections: the next reset finds it dead
    assert_same_batch(trainer.collect(), serial_batch)
    assert venv.restarts == 2


def test_one_iteration_updates_the_parameters_as_serial_does(placed, fresh_policy, tmp_path):
    serial = Trainer(config(fresh_policy, "serial"), tmp_path / "serial")
    trainer = placed("hybrid")  # earlier tests only collected with it: its learner is at the start
    trainer.iteration = 0
    rows = serial.step(), trainer.step()
    assert rows[1]["timing/sync_weights"] > 0 and trainer.collector.version == 1  # published for iteration 1
    for (name, a), b in zip(serial.policy.state_dict().items(), trainer.policy.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=name)
    assert rows[1]["rollout/success"] == rows[0]["rollout/success"]
    serial.close()


def test_pi0_chunks_collect_the_serial_batch_in_the_hybrid_pipeline(placed, fresh_pi0_policy, tmp_path):
    """The flow policy's noise comes from the per-env streams too: its chains and drawn steps match serial's."""
    extra = (*PI0, "policy.pi0.joint_logprob=false")
    serial = Trainer(config(fresh_pi0_policy, "serial", *extra), tmp_path / "serial")
    batches = serial.collect(), placed("hybrid", *extra, start=fresh_pi0_policy).collect()
    serial.close()
    assert_same_batch(*reversed(batches), close=(*CLOSE, "actions", "chain", "reward"))
    assert torch.equal(batches[0].denoise_step, batches[1].denoise_step)
    assert batches[0].chain.shape[-3] == 5 and (batches[0].denoise_step[batches[0].mask] >= 0).all()


def test_a_placement_larger_than_the_cluster_is_refused(ray_session, fresh_policy, tmp_path):
    cfg = config(fresh_policy, "disaggregated", "placement.env_workers=2", "placement.rollout_cpus=1")
    with pytest.raises(ValueError, match=r"asks for 3 CPUs .* the Ray cluster has 2"):
        Trainer(cfg, tmp_path / "run")
    cfg = config(fresh_policy, "collocated", "placement.rollout_gpus=1")
    with pytest.raises(ValueError, match="placement.rollout_gpus=1 but the Ray cluster has 0 GPUs"):
        Trainer(cfg, tmp_path / "run")
    assert ray.is_initialized()  # the session this module started is left as it was
