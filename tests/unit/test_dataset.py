import numpy as np
import pytest

from vlarl.data import DemoDataset, DemoWriter


def _episode(rng, t, success):
    return {
        "image": rng.integers(0, 256, (t, 1, 8, 8, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(t, 4)).astype(np.float32),
        "state": rng.normal(size=(t, 39)).astype(np.float32),
        "action": rng.uniform(-1, 1, (t, 4)).astype(np.float32),
        "reward": rng.normal(size=t).astype(np.float32),
        "success": np.arange(t) == t - 1 if success else np.zeros(t, bool),
    }


def test_write_then_load_gives_same_arrays(tmp_path):
    rng = np.random.default_rng(0)
    eps = [_episode(rng, 5, True), _episode(rng, 3, False)]
    w = DemoWriter(tmp_path / "ds")
    w.add_episode("reach-v3", "reach the goal", eps[0])
    w.add_episode("push-v3", "push the puck", eps[1])
    w.close({"tasks": ["reach-v3", "push-v3"]})
    ds = DemoDataset(tmp_path / "ds")
    assert len(ds) == 2 and ds.info["num_frames"] == 8 and ds.info["tasks"] == ["reach-v3", "push-v3"]
    assert [e["success"] for e in ds.episodes] == [True, False]
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        for k, v in ep.items():
            np.testing.assert_array_equal(got[k], v)
            assert got[k].dtype == v.dtype
    frames = ds.frames()
    np.testing.assert_array_equal(frames["action"], np.concatenate([eps[0]["action"], eps[1]["action"]]))
    assert frames["instruction"] == ["reach the goal"] * 5 + ["push the puck"] * 3
    np.testing.assert_array_equal(frames["episode_index"], [0] * 5 + [1] * 3)


def test_mismatched_arrays_are_rejected(tmp_path):
    rng = np.random.default_rng(0)
    w = DemoWriter(tmp_path / "ds")
    ep = _episode(rng, 4, True)
    ep["reward"] = ep["reward"][:2]
    with pytest.raises(ValueError, match="differ in length"):
        w.add_episode("t", "i", ep)
    w.add_episode("t", "i", _episode(rng, 4, True))
    bigger = _episode(rng, 4, True)
    bigger["image"] = np.zeros((4, 1, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="features"):
        w.add_episode("t", "i", bigger)
    w.abort()
    assert not (tmp_path / "ds").exists()


def test_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a vlarl demos dataset"):
        DemoDataset(tmp_path)
