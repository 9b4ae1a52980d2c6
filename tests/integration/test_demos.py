"""`vlarl demos` end to end on two MetaWorld tasks: collect, write, load, cache."""

from __future__ import annotations

import numpy as np
import pytest

from vlarl.cli import main
from vlarl.config import load_config
from vlarl.data import DemoDataset
from vlarl.demos import collect_demos


def _cfg(tmp_path, *extra):
    return load_config(
        "demos",
        overrides=[
            "env.task_set=custom",
            "env.tasks=[reach-v3,drawer-close-v3]",
            "env.num_envs=2",
            "env.num_workers=0",
            "env.image_size=32",
            "env.max_episode_steps=150",
            "demos.episodes_per_task=2",
            f"demos.output={tmp_path / 'ds'}",
            f"run.output_dir={tmp_path / 'runs'}",
            *extra,
        ],
    )


def test_collect_load_round_trip(tmp_path):
    root = collect_demos(_cfg(tmp_path))
    ds = DemoDataset(root)
    stats = ds.info["expert_stats"]
    assert {t: s["attempts"] for t, s in stats.items()} == {"reach-v3": 2, "drawer-close-v3": 2}
    assert len(ds) == sum(s["success"] for s in stats.values()) >= 3  # these experts rarely fail
    for i, meta in enumerate(ds.episodes):
        ep = ds.episode(i)
        t = meta["length"]
        assert ep["image"].shape == (t, 1, 32, 32, 3) and ep["action"].shape == (t, 4)
        assert ep["success"][-1] and not ep["success"][:-1].any()  # ends at the first success
        assert ep["reward"][-1] == 1.0 and np.abs(ep["action"]).max() <= 1.0
        assert meta["instruction"] in ("reach the goal position", "push the drawer closed")
    assert ds.info["config_hash"] and ds.info["features"]["image"]["shape"] == [1, 32, 32, 3]


def test_cached_and_conflicting(tmp_path):
    cfg = _cfg(tmp_path)
    root = collect_demos(cfg)
    mtime = (root / "meta" / "info.json").stat().st_mtime
    assert collect_demos(cfg) == root  # same config: reused
    assert (root / "meta" / "info.json").stat().st_mtime == mtime
    with pytest.raises(FileExistsError, match="overwrite"):
        collect_demos(_cfg(tmp_path, "demos.episodes_per_task=1"))
    collect_demos(_cfg(tmp_path, "demos.episodes_per_task=1", "demos.overwrite=true"))
    assert sum(s["attempts"] for s in DemoDataset(root).info["expert_stats"].values()) == 2


def test_action_noise_and_keep_all(tmp_path):
    root = collect_demos(_cfg(tmp_path, "demos.action_noise=0.3", "demos.keep=all"))
    ds = DemoDataset(root)
    assert len(ds) == 4  # every attempt is kept


def test_cli_writes_config_and_dataset(tmp_path, capsys):
    args = [
        "demos",
        "env.task_set=MT1",
        "env.tasks=[reach-v3]",
        "env.num_envs=1",
        "env.num_workers=1",
        "env.image_size=32",
        "demos.episodes_per_task=1",
        f"demos.output={tmp_path / 'ds'}",
        f"run.output_dir={tmp_path / 'runs'}",
        "run.name=r",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "scripted-expert success per task" in out and "reach-v3" in out
    saved = load_config("demos", config_file=str(tmp_path / "runs" / "r" / "config.yaml"))
    assert saved.env.tasks == ["reach-v3"] and saved.env.num_workers == 1
    assert len(DemoDataset(tmp_path / "ds")) == 1
