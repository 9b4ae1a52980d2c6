"""The chunk families (OpenVLA-OFT, pi0) through the whole CLI on the toy env: demos -> SFT on action chunks ->
PPO and GRPO -> eval."""

from __future__ import annotations

import json

import pytest

from vlarl.cli import main


@pytest.mark.parametrize(
    ("family", "algo", "extra"),
    [
        ("openvla_oft", "ppo", []),
        ("openvla_oft", "grpo", []),
        ("pi0", "ppo", []),
        ("pi0", "grpo", ["policy.pi0.joint_logprob=false"]),  # one stochastic step per chain, its index recorded
    ],
)
def test_train_runs_chunks_end_to_end(tmp_path, capsys, monkeypatch, family, algo, extra):
    monkeypatch.chdir(tmp_path)  # demos and SFT caches go under ./data
    args = [
        "train",
        "--preset",
        "toy_micro",
        f"policy.family={family}",
        f"policy.{family}.chunk_len=3",
        "env.num_envs=8",
        "demos.episodes_per_task=4",
        "sft.steps=3",
        "eval.trials_per_task=2",
        "trainer.iterations=2",
        "trainer.save_every=2",
        f"algo.name={algo}",
        "algo.group_size=4",
        "run.name=chunks",
        *extra,
    ]
    assert main(args) == 0
    assert "before and after RL" in capsys.readouterr().out
    run = tmp_path / "runs" / "chunks"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2
    assert summary["decisions"] < summary["env_steps"] <= 3 * summary["decisions"]  # up to 3 env steps per call
    # 12-step episodes in chunks of 3: at most 4 decisions per episode, each up to 3 env steps
    episodes = [e for r in summary["after"]["per_task"].values() for e in r["episodes"]]
    assert all(1 <= e["length"] <= 12 for e in episodes)
    saved = json.loads((run / "checkpoints" / "iter_000002" / "policy" / "config.json").read_text())["vlarl"]
    assert saved["family"] == family and saved["chunk_len"] == 3
