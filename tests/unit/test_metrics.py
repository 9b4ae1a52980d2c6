"""The run's metric sink: TensorBoard scalars, and W&B (offline) when a project is set."""

import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vlarl.utils.metrics import MetricLogger


def test_tensorboard_scalars_round_trip(tmp_path):
    logger = MetricLogger(tmp_path / "run")
    logger.log({"train/loss": 0.5, "eval/mean_success": 0.25}, 0)
    logger.log({"train/loss": 0.125}, 3)
    logger.close()
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(0, 0.5), (3, 0.125)]
    assert [(e.step, e.value) for e in events.Scalars("eval/mean_success")] == [(0, 0.25)]


def test_missing_wandb_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(ImportError, match=r"vlarl\[wandb\]"):
        MetricLogger(tmp_path / "run", wandb_project="vlarl-test")


def test_wandb_offline_run_gets_config_and_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is in the dev extra; install vlarl[wandb]")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricLogger(tmp_path / "run-7", wandb_project="vlarl-test", config={"algo": {"name": "grpo"}})
    run = logger.wandb
    logger.log({"train/loss": 0.5, "rollout/success": 0.75}, 0)
    logger.log({"train/loss": 0.25}, 1)  # commits step 0
    assert run.id == "run-7" and run.project == "vlarl-test"
    assert run.config["algo"] == {"name": "grpo"}
    assert run.summary["train/loss"] == 0.5 and run.summary["rollout/success"] == 0.75
    logger.close()
    files = list((tmp_path / "run-7" / "wandb").glob("offline-run-*/run-run-7.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 0
