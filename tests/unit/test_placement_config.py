"""The placement section: its validation at load and against a cluster's resources, the plan's layout, and that a
serial run never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlarl.config import load_config
from vlarl.config.loader import ConfigError
from vlarl.config.schema import PlacementConfig
from vlarl.distributed.placement import actor_options, check_resources, make_plan


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["placement.mode=ring"],
            "placement.mode='ring': choose one of 'serial', 'collocated', 'disaggregated', 'hybrid'",
        ),
        (
            ["placement.mode=collocated", "placement.env_workers=5"],
            "placement.env_workers=5: must divide env.num_envs=48",
        ),
        (
            ["placement.mode=hybrid", "placement.env_workers=2", "placement.pipeline_stages=5"],
            r"placement.pipeline_stages=5: hybrid needs >= 2 stages dividing the 24 envs of each env worker",
        ),
        (["placement.mode=hybrid"], "placement.pipeline_stages=1: hybrid needs >= 2 stages"),
        (
            ["placement.mode=disaggregated", "placement.pipeline_stages=2"],
            "placement.pipeline_stages=2: only mode 'hybrid' pipelines stages",
        ),
        (["placement.env_cpus=0"], r"placement.env_cpus=0.0: must be > 0"),
        (["placement.log_level=loud"], "placement.log_level='loud': choose one of 'debug'"),
        (["placement.env_nodes=[role]"], r"placement.env_nodes=\['role'\]: must be key=value items"),
        (["placement.learner_nodes=[=gpu]"], r"placement.learner_nodes=\['=gpu'\]: must be key=value items"),
        (["placement.learner_strategy=zero3"], "placement.learner_strategy='zero3': choose one of 'fsdp2', 'ddp'"),
    ],
)
def test_bad_placements_are_named_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("train", "toy_micro", overrides=overrides)


def test_resources_are_checked_against_the_cluster():
    two = PlacementConfig(mode="hybrid", env_workers=2, pipeline_stages=2, env_cpus=0.5, rollout_cpus=1)
    check_resources(two, cpus=2, gpus=0)  # 2 x 0.5 + 1 fits
    with pytest.raises(ValueError, match=r"asks for 3 CPUs \(placement.env_workers=2 x env_cpus=1 \+ rollout_cpus=1\)"):
        check_resources(PlacementConfig(mode="disaggregated", env_workers=2), cpus=2, gpus=0)
    check_resources(PlacementConfig(mode="collocated", env_workers=2, rollout_cpus=2), cpus=2, gpus=0)  # they share
    with pytest.raises(ValueError, match=r"asks for 3 CPUs \(max\("):
        check_resources(PlacementConfig(mode="collocated", env_workers=3), cpus=2, gpus=0)
    with pytest.raises(ValueError, match="placement.rollout_gpus=1 but the Ray cluster has 0 GPUs"):
        check_resources(PlacementConfig(mode="hybrid", pipeline_stages=2, rollout_gpus=1), cpus=16, gpus=0)


def test_the_plan_lays_out_pieces_and_inference_groups():
    hybrid = make_plan(PlacementConfig(mode="hybrid", env_workers=2, pipeline_stages=2), 8)
    assert hybrid.pieces == [[0, 1], [2, 3], [4, 5], [6, 7]]  # (worker 0, stage 0), (0, 1), (1, 0), (1, 1)
    assert hybrid.groups == [[0, 2], [1, 3]]  # stage s of every worker infers together
    assert hybrid.workers == 2 and hybrid.worker_pieces(1) == [2, 3]
    assert make_plan(PlacementConfig(mode="disaggregated", env_workers=2), 8).groups == [[0], [1]]
    assert make_plan(PlacementConfig(mode="collocated", env_workers=2), 8).groups == [[0, 1]]


def test_actors_ask_for_their_share_and_start_with_the_thread_plan():
    split = PlacementConfig(mode="disaggregated", env_cpus=0.5, rollout_cpus=1.5)
    env, rollout = actor_options(split, "env_worker"), actor_options(split, "rollout")
    assert env["num_cpus"] == 0.5 and env["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert rollout["num_cpus"] == 1.5 and rollout["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    shared = actor_options(PlacementConfig(mode="collocated", rollout_cpus=2), "rollout")
    assert shared["num_cpus"] == 0 and shared["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"
    assert "label_selector" not in env  # no labels: any node
    labelled = PlacementConfig(mode="hybrid", env_nodes=["role=sim", "zone=a"], rollout_nodes=["gpu=h200"])
    assert actor_options(labelled, "env_worker")["label_selector"] == {"role": "sim", "zone": "a"}
    assert actor_options(labelled, "rollout")["label_selector"] == {"gpu": "h200"}


def test_a_serial_run_does_not_import_ray():
    code = (
        "import sys; import vlarl.trainer, vlarl.distributed, vlarl.distributed.placement; "
        "from vlarl.config import load_config; load_config('train', 'toy_micro'); "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
