"""env.render_meshes=simplified: same physics, nearly the same image, fewer faces, an on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from vlarl import envs
from vlarl.envs import meshes
from vlarl.envs.gl import ensure_gl
from vlarl.envs.metaworld import MetaWorldEnv

from .conftest import env_cfg

TASK = "drawer-open-v3"  # MetaWorld moves the drawer body and the goal site at reset; two drawn meshes collide
STEPS = 40
MAX_MEAN_ABS_DIFF = 3.0  # mean |pixel difference| (0-255) at 64 px; measured 0.9-1.2
MIN_MEAN_ABS_DIFF = 0.3  # below it the simplified meshes were not drawn (coarser primitives alone: < 0.05)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("vlarl-cache")  # the tests but the cache test share one simplification


@pytest.fixture(autouse=True)
def _gl_and_cache(shared_cache, monkeypatch):
    ensure_gl()  # MetaWorldEnv is built directly here, without a backend (which would do this)
    monkeypatch.setenv("VLARL_CACHE", str(shared_cache))


def _episode(mode: str) -> dict:
    """Reset with a fixed generator, take STEPS fixed random actions; per-step qpos, rewards, success, images."""
    cfg = env_cfg(render_meshes=mode, tasks=f"[{TASK}]", image_size=64, reward="dense")
    env = MetaWorldEnv(TASK, cfg)
    actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, 4))
    out = {"image": [env.reset(None, np.random.default_rng(1))["image"]], "qpos": [], "reward": [], "success": []}
    for a in actions:
        reward, success = env.step(a)
        obs = env.observe()
        out["qpos"].append(env.env.data.qpos.copy())
        out["reward"].append(reward)
        out["success"].append(success)
        out["image"].append(obs["image"])
    out["model"] = env.env.model
    env.close()
    return {k: v if k == "model" else np.array(v) for k, v in out.items()}


def test_physics_identical_images_close():
    full, simple = _episode("full"), _episode("simplified")
    np.testing.assert_array_equal(full["qpos"], simple["qpos"])
    np.testing.assert_array_equal(full["reward"], simple["reward"])
    np.testing.assert_array_equal(full["success"], simple["success"])
    assert np.ptp(full["qpos"], axis=0).max() > 0.01  # the arm moved: the comparison is not between still frames
    fm, sm = full["model"], simple["model"]
    assert fm.nbody == sm.nbody and fm.ngeom == sm.ngeom and fm.nmesh == sm.nmesh
    collides = (fm.geom_contype | fm.geom_conaffinity) > 0
    assert (collides & (fm.geom_type == 7)).any()  # some collision geoms are meshes (the gripper base, the wrist)
    for name in ("body_mass", "body_inertia", "geom_size", "geom_pos", "mesh_vert", "mesh_face", "mesh_graph"):
        np.testing.assert_array_equal(getattr(fm, name), getattr(sm, name), err_msg=name)
    assert (fm.vis.quality.numslices, fm.vis.quality.numquads) == (sm.vis.quality.numslices, sm.vis.quality.numquads)

    diff = np.abs(full["image"].astype(np.int16) - simple["image"]).mean(axis=(1, 2, 3, 4))
    assert diff.max() < MAX_MEAN_ABS_DIFF
    assert diff.min() > MIN_MEAN_ABS_DIFF


def test_fewer_faces_and_cache_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("VLARL_CACHE", str(tmp_path))
    env = MetaWorldEnv(TASK, env_cfg(cameras="[]", tasks=f"[{TASK}]"))
    model = env.env.model
    first = meshes.simplify_meshes(model)
    files = sorted((tmp_path / "meshes").glob("*"))
    assert first.simplified_now == len(files) > 5 and all(f.suffix == ".npz" for f in files)  # no partial .tmp
    assert first.faces_after * 4 < first.faces_before
    assert model.nmeshface - first.faces_before + first.faces_after < model.nmeshface / 3  # drawn faces in all

    def fail(*args):
        raise AssertionError("simplified again instead of reading the cache")

    monkeypatch.setattr(meshes, "_simplify", fail)
    second = meshes.simplify_meshes(model)
    assert second.simplified_now == 0 and second.ids == first.ids
    np.testing.assert_array_equal(first.carrier.mesh_vert, second.carrier.mesh_vert)
    env.close()


def test_config_flows_to_vector_env():
    images = {}
    for mode in ("full", "simplified"):
        venv = envs.make(env_cfg(render_meshes=mode, tasks=f"[{TASK}]", num_envs=1, image_size=64))
        images[mode] = venv.reset(seed=0)["image"].astype(np.int16)
        venv.close()
    assert MIN_MEAN_ABS_DIFF < np.abs(images["full"] - images["simplified"]).mean() < MAX_MEAN_ABS_DIFF


def test_bad_value_names_choices():
    with pytest.raises(ValueError, match="render_meshes='fast': choose one of 'full', 'simplified'"):
        env_cfg(render_meshes="fast")  # refused when the config loads, before any simulator is built
