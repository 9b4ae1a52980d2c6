"""`vlarl sft` then `vlarl eval` on two MetaWorld tasks with the tiny policy (a few steps)."""

from __future__ import annotations

import dataclasses
import json

import imageio.v2 as imageio
import pytest
from safetensors.torch import load_file

from vlarl.cli import main

COMMON = [
    "env.task_set=custom",
    "env.tasks=[reach-v3,drawer-close-v3]",
    "env.num_envs=2",
    "env.num_workers=0",
    "env.image_size=64",
    "env.max_episode_steps=15",
    "env.num_eval_init_states=3",
]


def test_sft_then_eval(tmp_path, capsys):
    sft = [
        "sft",
        *COMMON,
        "demos.episodes_per_task=1",
        "demos.keep=all",
        f"demos.output={tmp_path / 'ds'}",
        "sft.steps=6",
        "sft.batch_size=4",
        "sft.warmup_steps=2",
        "sft.save_every=3",
        "eval.trials_per_task=1",
        "policy.lora_rank=4",
        f"run.output_dir={tmp_path}",
        "run.name=sft",
    ]
    assert main(sft) == 0
    run = tmp_path / "sft"
    ckpt = run / "checkpoints" / "latest"
    assert (run / "checkpoints" / "step_000003" / "config.json").is_file()
    assert (run / "checkpoints" / "step_000006" / "config.json").is_file()
    assert not any("lora" in k for k in load_file(ckpt / "model.safetensors"))  # adapters merged for export
    assert list((run / "tb").glob("events.out.tfevents.*"))
    sft_report = json.loads((run / "eval" / "report.json").read_text())
    assert set(sft_report["per_task"]) == {"reach-v3", "drawer-close-v3"}
    capsys.readouterr()

    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "eval.trials_per_task=2",
                "eval.videos_per_task=1",
                f"run.output_dir={tmp_path}",
                "run.name=ev",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "success per task" in out and "reach-v3" in out
    report = json.loads((tmp_path / "ev" / "eval" / "report.json").read_text())
    assert [r["trials"] for r in report["per_task"].values()] == [2, 2]
    for r in report["per_task"].values():
        assert all(1 <= e["length"] <= 15 for e in r["episodes"])
        assert sorted(e["init_state"] for e in r["episodes"]) == [0, 1]
    assert 0.0 <= report["mean_success"] <= 1.0
    # the env comes from the checkpoint's run config: 2 tasks, 15-step limit, 64 px
    assert report["config"]["env"]["max_episode_steps"] == 15 and report["config"]["env"]["image_size"] == 64
    videos = sorted(p.name for p in (tmp_path / "ev" / "eval" / "videos").glob("*.mp4"))
    assert videos == ["drawer-close-v3_init000.mp4", "reach-v3_init000.mp4"]
    assert all(p.stat().st_size > 1000 for p in (tmp_path / "ev" / "eval" / "videos").glob("*.mp4"))
    frames = imageio.mimread(tmp_path / "ev" / "eval" / "videos" / "reach-v3_init000.mp4")
    episode = next(e for e in report["per_task"]["reach-v3"]["episodes"] if e["init_state"] == 0)
    assert len(frames) == episode["length"] + 1 and frames[0].shape == (256, 512, 3)  # replay at 256 | input x4


def test_video_replay_is_the_evaluated_episode(tmp_path):
    """At the input's own size the replay renders exactly the frames the episode produced."""
    import numpy as np

    from vlarl import envs
    from vlarl.config import load_config
    from vlarl.evaluate import VideoReplay, evaluate_policy

    cfg = load_config("eval", overrides=[*COMMON, "env.num_envs=1", "eval.trials_per_task=1"])
    venv = envs.make(cfg.env)
    obs = venv.reset(options={"task": ["reach-v3"], "init_state": [1]})
    seen, actions = [obs["image"][0, 0]], []
    rng = np.random.default_rng(0)
    for _ in range(8):
        actions.append(rng.uniform(-1, 1, 4).astype(np.float32))
        obs, *_ = venv.step(actions[-1][None])
        seen.append(obs["image"][0, 0])
    venv.close()
    replay = VideoReplay(cfg.env, 64)
    frames = np.stack(replay.frames("reach-v3", 1, actions, seen))
    replay.close()
    assert frames.shape == (9, 64, 128, 3)
    assert (frames[:, :, :64] == frames[:, :, 64:]).all()
    assert (frames[-1] != frames[0]).any()  # the robot moved: equality has teeth
    bad = dataclasses.replace(cfg.eval, video_size=100, trials_per_task=1)
    with pytest.raises(ValueError, match="multiple of env.image_size"):
        evaluate_policy(None, cfg.env, bad, tmp_path)


def test_eval_needs_a_checkpoint(capsys):
    assert main(["eval"]) == 2
    assert "--checkpoint" in capsys.readouterr().out
