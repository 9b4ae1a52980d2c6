"""The LIBERO backend behind the vector-env contract: one task per standard suite, a few steps each."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("libero") is None:  # found, not imported: importing it would import mujoco before GL is set
    pytest.skip("the libero extra is not installed (pip install 'vlarl[libero]')", allow_module_level=True)

from vlarl.config import load_config  # noqa: E402
from vlarl.envs import libero, make  # noqa: E402


def _env_cfg(*overrides):
    base = ["env.backend=libero", "env.num_envs=1", "env.num_workers=0", "env.cameras=[agentview]", "env.image_size=64"]
    return load_config("train", overrides=[*base, *overrides]).env


def test_suites_tasks_and_init_states_without_a_simulator():
    assert set(libero.STANDARD_SUITES) <= set(libero.suites())
    assert {"libero_spatial_lan", "libero_object_swap"} <= set(libero.suites())  # LIBERO-PRO's OOD sets
    backend = libero.LiberoBackend(
        _env_cfg("env.task_set=libero_goal", "env.num_eval_init_states=5", "eval.trials_per_task=5")
    )
    assert backend.tasks == tuple(f"libero_goal:{i}" for i in range(10))
    spec = backend.spec(2)
    assert (spec.action_dim, spec.proprio_dim, spec.state_dim) == (7, 8, 0)
    assert all(spec.instructions[t] and spec.instructions[t].islower() for t in spec.tasks)
    states = backend.eval_init_states("libero_goal:3")
    assert states.shape == (5, libero._suite("libero_goal").get_task_init_states(3).shape[1])
    np.testing.assert_array_equal(states, libero._suite("libero_goal").get_task_init_states(3)[:5])
    assert libero.resolve_tasks("custom", ["libero_10:9", "libero_90:0"]) == ("libero_10:9", "libero_90:0")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env.task_set=libero_nowhere"], "unknown LIBERO suite 'libero_nowhere'; suites: "),
        (["env.task_set=custom", "env.tasks=[libero_10:10]"], r"suite libero_10 has tasks 0..9"),
        (["env.task_set=custom", "env.tasks=[spatial-0]"], r"is not '<suite>:<index>'"),
        (["env.task_set=custom"], "needs env.tasks"),
        (["env.task_set=libero_10", "env.cameras=[corner]"], r"unknown LIBERO cameras \['corner'\]"),
        (["env.task_set=libero_10", "env.num_eval_init_states=60"], "LIBERO has 50 per task"),
    ],
)
def test_bad_libero_configs_name_what_is_valid(overrides, message):
    with pytest.raises(ValueError, match=message):
        libero.LiberoBackend(_env_cfg(*overrides))


def test_openvla_gripper_convention():
    assert [libero.libero_gripper(g) for g in (0.0, 0.2, 0.5, 1.0)] == [1.0, 1.0, -1.0, -1.0]


@pytest.mark.parametrize("suite", libero.STANDARD_SUITES)
def test_one_task_per_suite_steps_through_the_vector_env(suite):
    cfg = _env_cfg(f"env.task_set={suite}", f"env.tasks=[{suite}:0]", "env.max_episode_steps=3")
    venv = make(cfg)
    try:
        obs = venv.reset(seed=0, options={"init_state": [0]})
        assert obs["image"].shape == (1, 1, 64, 64, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 5  # a rendered scene, not a blank frame
        assert obs["proprio"].shape == (1, 8) and obs["state"].shape == (1, 0)
        assert obs["instruction"] == [libero._suite(suite).get_task(0).language]
        start = obs["proprio"][0].copy()
        up = np.zeros((1, 3, 7))
        up[..., 2], up[..., 6] = 0.5, -1.0  # move the end effector up, gripper open
        obs, reward, term, trunc, info = venv.step_chunk(up)
        assert reward.shape == (1, 3) and not term.any() and trunc[0, 2]  # cut at the 3-step limit
        assert info["final_proprio"][0, 2] > start[2] + 0.005  # the end effector rose (m)
        assert not info["episode_success"][0] and info["episode_length"][0] == 3
    finally:
        venv.close()


def _write_libero_file(path, instruction, lengths, size=16, seed=0):
    """A demo file in LIBERO's HDF5 layout (see vlarl.data.libero_hdf5), with known contents."""
    import json

    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": instruction, "problem_name": "x"})
        for i, t in enumerate(lengths):
            demo = data.create_group(f"demo_{i}")
            demo["actions"] = rng.uniform(-1, 1, (t, 7))
            demo["dones"] = np.arange(t) == t - 1
            demo["rewards"] = (np.arange(t) == t - 1).astype(np.float64)
            obs = demo.create_group("obs")
            obs["agentview_rgb"] = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
            obs["eye_in_hand_rgb"] = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
            obs["ee_pos"], obs["ee_ori"] = rng.normal(size=(t, 3)), rng.normal(size=(t, 3))
            obs["gripper_states"] = rng.normal(size=(t, 2))


def test_libero_hdf5_demos_import_and_train_sft(tmp_path):
    import h5py

    from vlarl.cli import main
    from vlarl.data.dataset import DemoDataset

    suite = libero._suite("libero_spatial")
    src = tmp_path / "libero_spatial"
    src.mkdir()
    _write_libero_file(src / f"{suite.get_task(2).name}_demo.hdf5", suite.get_task(2).language, [5, 3])
    _write_libero_file(src / "renamed_demo.hdf5", suite.get_task(7).language, [4], seed=1)  # found by instruction
    common = ["env.backend=libero", "env.task_set=libero_spatial", "env.cameras=[agentview]", "env.image_size=16"]
    out = tmp_path / "demos"
    assert main(["demos", *common, f"demos.source={src}", f"demos.output={out}"]) == 0
    data = DemoDataset(out)
    assert [(e["task"], e["length"], e["success"]) for e in data.episodes] == [
        ("libero_spatial:2", 5, True),
        ("libero_spatial:2", 3, True),
        ("libero_spatial:7", 4, True),
    ]
    with h5py.File(src / f"{suite.get_task(2).name}_demo.hdf5") as f:
        demo = f["data/demo_1"]
        episode = data.episode(1)
        np.testing.assert_array_equal(episode["image"][:, 0], np.asarray(demo["obs/agentview_rgb"])[:, ::-1, ::-1])
        np.testing.assert_allclose(episode["action"], np.asarray(demo["actions"]), rtol=1e-6)
        proprio = np.concatenate([demo["obs/ee_pos"], demo["obs/ee_ori"], demo["obs/gripper_states"]], 1)
        np.testing.assert_allclose(episode["proprio"], proprio, rtol=1e-6)
    sft = ["sft", *common, f"sft.dataset={out}", "sft.steps=3", "sft.eval_at_end=false", "policy.use_proprio=true"]
    assert main([*sft, f"run.output_dir={tmp_path}/runs", "run.name=sft"]) == 0
    assert (tmp_path / "runs" / "sft" / "checkpoints" / "latest" / "config.json").is_file()
    with pytest.raises(ValueError, match="needs env.backend=libero"):
        load_config("demos", overrides=[f"demos.source={src}"])
