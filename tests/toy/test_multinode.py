"""A placement on a multi-node Ray cluster joined by ``placement.ray_address``: three raylets on loopback (as
``ray start --head --labels ...`` / ``ray start --address ... --labels ...`` would make), the env workers kept on
the two ``role=sim`` nodes and the rollout worker on the ``role=infer`` one by node labels; the batch is serial's."""

from __future__ import annotations

import pytest

from tests.toy.test_placement import assert_same_batch, config
from vlarl.trainer import Trainer

ray = pytest.importorskip("ray", reason="the Ray placements need the ray extra: pip install 'vlarl[ray]'")


def test_node_labels_place_env_workers_on_both_sim_nodes_and_the_batch_is_serial(fresh_policy, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    serial = Trainer(config(fresh_policy, "serial"), tmp_path / "serial")
    expected = serial.collect()
    serial.close()
    ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": {"role": "sim"}})
    try:
        sim = cluster.add_node(num_cpus=1, labels={"role": "sim"})
        infer = cluster.add_node(num_cpus=1, labels={"role": "infer"})
        cfg = config(
            fresh_policy,
            "disaggregated",
            "placement.env_workers=2",
            f"placement.ray_address={cluster.address}",
            "placement.env_nodes=[role=sim]",
            "placement.rollout_nodes=[role=infer]",
        )
        trainer = Trainer(cfg, tmp_path / "placed")
        batch = trainer.collect()
        env_nodes = {ray.get(actor.node.remote()) for actor in trainer.venv.actors}
        rollout_node = ray.get(trainer.collector.rollout.info.remote())["node"]
        trainer.close()
        assert env_nodes == {cluster.head_node.node_id, sim.node_id}  # one env worker per sim node
        assert rollout_node == infer.node_id
        assert_same_batch(batch, expected)
    finally:
        ray.shutdown()
        cluster.shutdown()
