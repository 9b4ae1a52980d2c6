"""The ManiSkill3 backend behind the vector-env contract: tasks, cameras, seeding, the scripted experts, and
demos -> SFT -> eval through the CLI, a few steps each."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("mani_skill") is None:
    pytest.skip("the maniskill extra is not installed (pip install 'vlarl[maniskill]')", allow_module_level=True)

from vlarl.config import load_config  # noqa: E402
from vlarl.envs import make, make_expert, maniskill  # noqa: E402


def _env_cfg(*overrides):
    base = ["env.backend=maniskill", "env.task_set=custom", "env.num_envs=1", "env.num_workers=0"]
    return load_config("train", overrides=[*base, "env.cameras=[base_camera]", "env.image_size=64", *overrides]).env


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env.tasks=[PickSingleYCB-v1]"], r"needs assets downloaded \(ycb\)"),
        (["env.tasks=[PickBall-v9]"], "unknown ManiSkill task 'PickBall-v9'; tasks: PickCube-v1, "),
        ([], "needs env.tasks"),
        (["env.task_set=MT10"], "unknown ManiSkill task set 'MT10'; choose 'all' or 'custom'"),
        (["env.tasks=[PickCube-v1]", "env.cameras=[corner]"], r"unknown ManiSkill cameras \['corner'\]"),
    ],
)
def test_bad_maniskill_configs_name_what_is_valid(overrides, message):
    with pytest.raises(ValueError, match=message):
        maniskill.ManiSkillBackend(_env_cfg(*overrides))


def test_tasks_spec_and_eval_seeds_without_a_simulator():
    backend = maniskill.ManiSkillBackend(
        _env_cfg("env.task_set=all", "env.num_eval_init_states=6", "eval.trials_per_task=6")
    )
    assert backend.tasks == tuple(maniskill.TASKS)
    spec = backend.spec(2)
    assert (spec.action_dim, spec.proprio_dim, spec.state_dim) == (7, 8, 30)
    seeds = backend.eval_init_states("PickCube-v1")
    assert seeds.shape == (6, 1) and (seeds % 2 == 1).all() and len(set(seeds[:, 0])) == 6  # odd: never trained on
    np.testing.assert_array_equal(seeds, maniskill.ManiSkillBackend(backend.cfg).eval_init_states("PickCube-v1"))
    assert not np.array_equal(seeds, backend.eval_init_states("PushCube-v1"))


@pytest.mark.parametrize(
    ("task", "views"), [("PickCube-v1", ["base_camera"]), ("StackCube-v1", list(maniskill.CAMERAS))]
)
def test_one_task_steps_through_the_vector_env(task, views):
    cfg = _env_cfg(f"env.tasks=[{task}]", f"env.cameras=[{','.join(views)}]", "env.max_episode_steps=3")
    venv = make(cfg)
    try:
        obs = venv.reset(seed=0)
        assert obs["image"].shape == (1, len(views), 64, 64, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 5  # a rendered scene, not a blank frame
        assert obs["proprio"].shape == (1, 8) and obs["state"].shape == (1, 30)
        assert obs["instruction"] == [maniskill.TASKS[task].instruction]
        np.testing.assert_allclose(obs["proprio"][0, :3], obs["state"][0, :3])  # both start with the TCP position
        start = obs["proprio"][0].copy()
        up = np.zeros((1, 3, 7))
        up[..., 2], up[..., 6] = 1.0, 1.0  # move the TCP up, gripper open
        obs, reward, term, trunc, info = venv.step_chunk(up)
        assert reward.shape == (1, 3) and not term.any() and trunc[0, 2]  # cut at the 3-step limit
        assert info["final_proprio"][0, 2] > start[2] + 0.02  # the TCP rose (m): +z in the base frame is up
        assert not info["episode_success"][0] and info["episode_length"][0] == 3
    finally:
        venv.close()


def test_an_init_state_is_a_seed_that_replays_the_scene():
    backend = maniskill.ManiSkillBackend(_env_cfg("env.tasks=[PushCube-v1]", "env.cameras=[]"))
    env = backend.make_env("PushCube-v1")
    try:
        first = env.reset(None, np.random.default_rng(0))
        assert env.init_state.shape == (1,) and env.init_state[0] % 2 == 0  # training draws even seeds
        seed = env.init_state.copy()
        other = env.reset(None, np.random.default_rng(1))
        assert not np.allclose(other["state"][9:12], first["state"][9:12])  # another cube position
        again = env.reset(seed, None)
        np.testing.assert_array_equal(again["state"], first["state"])
    finally:
        env.close()


@pytest.mark.parametrize("task", maniskill.ManiSkillExpert.TASKS)
def test_scripted_experts_succeed_on_evaluation_seeds(task):
    cfg = _env_cfg(
        f"env.tasks=[{task}]",
        "env.cameras=[]",
        "env.max_episode_steps=60",
        "env.num_eval_init_states=5",
        "eval.trials_per_task=5",
    )
    venv = make(cfg)
    expert = make_expert("maniskill", task)
    successes = 0
    try:
        for i in range(5):
            obs = venv.reset(options={"init_state": [i]})
            for _ in range(60):
                obs, _, term, trunc, info = venv.step(expert(obs["state"][0])[None])
                if term[0] or trunc[0]:
                    successes += bool(info["episode_success"][0])
                    break
    finally:
        venv.close()
    assert successes >= 4, f"{task}: the expert succeeded {successes}/5"


def test_no_expert_for_other_tasks():
    with pytest.raises(ValueError, match="no scripted ManiSkill expert for 'RollBall-v1'; experts: PickCube-v1"):
        make_expert("maniskill", "RollBall-v1")


def test_a_missing_vulkan_driver_is_named():
    """Without a Vulkan driver SAPIEN cannot start, even without cameras; the error says how to get one."""
    code = (
        "from vlarl.config import load_config; from vlarl.envs import maniskill\n"
        "cfg = load_config('train', overrides=['env.backend=maniskill', 'env.task_set=custom',"
        " 'env.tasks=[PickCube-v1]', 'env.cameras=[]']).env\n"
        "maniskill.ManiSkillBackend(cfg).make_env('PickCube-v1')\n"
    )
    env = {**os.environ, "VK_ICD_FILENAMES": "/nonexistent/icd.json"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "ManiSkill found no Vulkan device" in res.stderr and "vulkan-backports.sh" in res.stderr


def test_demos_sft_eval_on_pickcube(tmp_path, capsys):
    from vlarl.cli import main

    common = [
        "--preset",
        "maniskill_pickcube_tiny",
        "env.num_envs=2",
        "env.num_workers=1",
        "env.image_size=32",
        f"run.output_dir={tmp_path}/runs",
    ]
    out = tmp_path / "demos"
    assert main(["demos", *common, "demos.episodes_per_task=4", f"demos.output={out}"]) == 0
    assert "PickCube-v1" in capsys.readouterr().out
    sft = ["sft", *common, f"sft.dataset={out}", "sft.steps=3", "sft.eval_at_end=false", "run.name=sft"]
    assert main(sft) == 0
    ckpt = tmp_path / "runs" / "sft" / "checkpoints" / "latest"
    evaluate = ["eval", *common, f"eval.checkpoint={ckpt}", "eval.trials_per_task=2", "eval.video_size=64"]
    assert main([*evaluate, "run.name=ev"]) == 0
    assert "success per task" in capsys.readouterr().out
    report = json.loads((tmp_path / "runs" / "ev" / "eval" / "report.json").read_text())
    assert list(report["per_task"]) == ["PickCube-v1"] and report["per_task"]["PickCube-v1"]["trials"] == 2
    video = tmp_path / "runs" / "ev" / "eval" / "videos" / "PickCube-v1_init000.mp4"
    assert video.stat().st_size > 1000
