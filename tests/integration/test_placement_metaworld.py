"""The hybrid pipeline on MetaWorld: Ray env workers rendering real frames, 2 stages, the tiny policy in a rollout
worker, collect serial's batch (tokens, rewards, flags and images bitwise; log-probs and values within 1e-5)."""

from __future__ import annotations

import pytest
import torch

from tests.integration.test_train import SMALL
from tests.toy.test_placement import assert_same_batch
from vlarl.config import load_config
from vlarl.policies.openvla.checkpoint import save_pretrained
from vlarl.policies.openvla.factory import build_policy
from vlarl.trainer import Trainer

ray = pytest.importorskip("ray", reason="the Ray placements need the ray extra: pip install 'vlarl[ray]'")


def test_hybrid_collects_the_serial_batch_on_metaworld(tmp_path):
    from vlarl.config.schema import PlacementConfig
    from vlarl.distributed.placement import start_ray

    torch.manual_seed(0)
    start = tmp_path / "start"
    save_pretrained(build_policy("tiny", 4, instructions=["reach the goal position", "push the drawer closed"]), start)

    def trainer(name, *placement):
        overrides = [*SMALL, "env.num_envs=4", "env.max_episode_steps=8", "trainer.init=checkpoint"]
        overrides += [f"policy.checkpoint={start}", f"run.output_dir={tmp_path}", *placement]
        return Trainer(load_config("train", overrides=overrides), tmp_path / name)

    serial = trainer("serial")
    serial.iteration = 3
    expected = serial.collect()
    serial.close()
    assert expected.truncated.any()  # the step limit cuts episodes: their bootstrap values are compared too
    started = start_ray(PlacementConfig(num_cpus=2))
    try:
        placed = trainer("hybrid", "placement.mode=hybrid", "placement.pipeline_stages=2", "placement.env_cpus=1")
        placed.iteration = 3
        batch = placed.collect()
        placed.close()
    finally:
        if started:
            ray.shutdown()
    assert_same_batch(batch, expected)
