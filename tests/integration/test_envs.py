"""Contract tests of the VectorEnv API on the MetaWorld backend."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from vlarl import envs
from vlarl.envs.metaworld import INSTRUCTIONS, goal_marker_mask

from .conftest import env_cfg


@pytest.fixture
def venv():
    v = envs.make(env_cfg())
    yield v
    v.close()


def _rollout(v, seed, actions):
    out = [v.reset(seed=seed)]
    for a in actions:
        out.append(v.step_chunk(a))
    return out


def test_shapes_dtypes_ranges(venv):
    obs = venv.reset(seed=0)
    spec = venv.spec
    assert obs["image"].shape == (2, 1, 32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["proprio"].shape == (2, spec.proprio_dim) and obs["proprio"].dtype == np.float32
    assert obs["state"].shape == (2, spec.state_dim) and obs["state"].dtype == np.float32
    assert obs["instruction"] == [INSTRUCTIONS["reach-v3"], INSTRUCTIONS["push-v3"]]
    assert obs["image"].std() > 5  # a real render, not a blank buffer
    obs, reward, term, trunc, info = venv.step(np.zeros((2, 4)))
    assert reward.shape == term.shape == trunc.shape == (2,)
    assert reward.dtype == np.float32 and term.dtype == bool and trunc.dtype == bool
    assert info["success"].shape == (2,) and info["success"].dtype == bool
    assert set(np.unique(reward)) <= {0.0, 1.0}  # sparse reward
    assert info["final_image"].shape == obs["image"].shape


def test_image_is_upright(venv):
    """In the right half of the corner view the grey back wall is on top, the brown table below it."""
    img = venv.reset(seed=0)["image"][0, 0, :, 16:].astype(int)
    saturation = (img.max(-1) - img.min(-1)).reshape(4, 8, 16).mean(axis=(1, 2))  # per quarter, top first
    assert saturation[0] < 10 < saturation[2]


def test_seeding_is_deterministic(venv):
    a = venv.reset(seed=5)
    b = venv.reset(seed=5)
    c = venv.reset(seed=6)
    np.testing.assert_array_equal(a["state"], b["state"])
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["state"], c["state"])


def test_actions_are_clipped(venv):
    venv.reset(seed=1)
    big = venv.step(np.full((2, 4), 50.0))[0]["state"]
    venv.reset(seed=1)
    one = venv.step(np.full((2, 4), 1.0))[0]["state"]
    np.testing.assert_array_equal(big, one)


def test_bad_actions_shape(venv):
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[B=2, K, A=4\]"):
        venv.step_chunk(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\[B, A\]"):
        venv.step(np.zeros((2, 1, 4)))


def test_autoreset_and_truncation():
    v = envs.make(env_cfg(max_episode_steps=5))
    prev = v.reset(seed=0)
    for _ in range(4):
        prev, _, term, trunc, _ = v.step(np.zeros((2, 4)))
        assert not (term.any() or trunc.any())
    obs, reward, term, trunc, info = v.step(np.zeros((2, 4)))
    assert trunc.all() and not term.any()
    np.testing.assert_array_equal(info["episode_length"], [5, 5])
    # the final observation is the one the zero action led to; obs is the next episode's first
    assert not np.array_equal(info["final_state"], obs["state"])
    assert np.abs(info["final_state"] - prev["state"]).max() < 0.05
    v.reset(seed=0)
    v2 = envs.make(env_cfg(max_episode_steps=50))
    fresh = v2.reset(seed=0)
    # a new episode starts from a new random draw of the same env's generator
    assert not np.array_equal(obs["state"][:, 36:], fresh["state"][:, 36:])
    v.close(), v2.close()


def _expert_actions(v, obs):
    return np.stack([envs.make_expert("metaworld", t)(s) for t, s in zip(v.spec.env_tasks, obs["state"])])


def test_termination_on_success_with_expert():
    v = envs.make(env_cfg(tasks="[reach-v3]", num_envs=1, max_episode_steps=150))
    obs = v.reset(seed=0)
    expert = envs.make_expert("metaworld", "reach-v3")
    for _ in range(150):
        obs, reward, term, trunc, info = v.step(expert(obs["state"][0])[None])
        if term[0]:
            break
    assert term[0] and not trunc[0] and reward[0] == 1.0
    assert info["success"][0] and info["episode_success"][0]
    v.close()


def test_shaped_reward_is_success_plus_the_change_of_metaworlds_reward_over_10():
    """The expert's episode twice from one state, dense and shaped: shaped step t = success + (d_t - d_{t-1}) / 10
    (d_{-1} = 0), so the episode's shaped return telescopes to 1 + d_T / 10."""
    runs = {}
    for reward in ("dense", "shaped"):
        v = envs.make(env_cfg(tasks="[reach-v3]", num_envs=1, max_episode_steps=150, reward=reward))
        obs, expert, rewards = v.reset(seed=0), envs.make_expert("metaworld", "reach-v3"), []
        for _ in range(150):
            obs, r, term, trunc, _ = v.step(expert(obs["state"][0])[None])
            rewards.append(float(r[0]))
            if term[0] or trunc[0]:
                break
        assert term[0]
        runs[reward] = np.array(rewards)
        v.close()
    dense, shaped = runs["dense"], runs["shaped"]
    assert len(dense) == len(shaped) > 5
    success = np.zeros(len(dense))
    success[-1] = 1.0
    np.testing.assert_allclose(shaped, success + np.diff(dense, prepend=0.0) / 10, atol=1e-5)
    assert shaped.sum() == pytest.approx(1 + dense[-1] / 10, abs=1e-4)
    assert np.abs(np.diff(dense)).max() > 0.01  # the shaping term is not trivially 0


def test_step_chunk_matches_single_steps_and_stops_at_episode_end():
    cfg = env_cfg(max_episode_steps=7)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (2, 4, 4))
    chunked = envs.make(cfg)
    chunked.reset(seed=3)
    stepped = envs.make(cfg)
    stepped.reset(seed=3)
    # chunk 1: 4 steps; chunk 2: the episode ends at its 3rd step (7 = 4 + 3)
    for c in range(2):
        obs_c, rew_c, term_c, trunc_c, info_c = chunked.step_chunk(actions)
        for k in range(4):
            if c == 1 and k == 3:
                break
            obs_s, rew_s, term_s, trunc_s, info_s = stepped.step(actions[:, k])
            np.testing.assert_array_equal(rew_c[:, k], rew_s)
            np.testing.assert_array_equal(trunc_c[:, k], trunc_s)
        for key in ("image", "proprio", "state"):  # chunk 1: its last frame; chunk 2: the next episode's first
            np.testing.assert_array_equal(obs_c[key], obs_s[key])
    assert info_c["valid"].tolist() == [[True, True, True, False]] * 2
    assert trunc_c[:, 2].all() and not trunc_c[:, 3].any() and (rew_c[:, 3] == 0).all()
    for key in ("image", "proprio", "state"):
        np.testing.assert_array_equal(info_c[f"final_{key}"], info_s[f"final_{key}"])
    assert info_c["final_image"].std() > 5  # the episode's last frame was rendered, not left blank
    chunked.close(), stepped.close()


def test_a_chunk_renders_only_the_frames_it_returns(monkeypatch):
    """One frame per camera per chunk (its last), plus one per episode end (the final frame) and reset."""
    import mujoco

    renders = []
    render = mujoco.Renderer.render
    monkeypatch.setattr(mujoco.Renderer, "render", lambda self, *a, **kw: renders.append(1) or render(self, *a, **kw))
    v = envs.make(env_cfg(max_episode_steps=6, cameras="[corner,topview]"))
    v.reset(seed=0)
    assert len(renders) == 2 * 2  # 2 envs x 2 cameras
    v.step_chunk(np.zeros((2, 4, 4)))  # 4 simulator steps per env, one frame each
    assert len(renders) == 2 * 2 * 2
    v.step_chunk(np.zeros((2, 4, 4)))  # the episodes end at their 2nd action: final frame + reset frame
    assert len(renders) == 2 * 2 * 4
    v.close()


def test_action_repeat_holds_the_action_and_sums_rewards():
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (4, 2, 4))
    held = envs.make(env_cfg(action_repeat=3, reward="dense"))
    single = envs.make(env_cfg(action_repeat=1, reward="dense", max_episode_steps=90))
    held.reset(seed=5), single.reset(seed=5)
    for a in actions:
        obs_h, rew_h, *_ = held.step(a)
        total = np.zeros(2, np.float32)
        for _ in range(3):
            obs_s, rew_s, *_ = single.step(a)
            total += rew_s
        np.testing.assert_allclose(rew_h, total, rtol=1e-5)
        np.testing.assert_array_equal(obs_h["state"], obs_s["state"])
        np.testing.assert_array_equal(obs_h["image"], obs_s["image"])  # the frame after the last repeat
    held.close(), single.close()
    with pytest.raises(ValueError, match="action_repeat"):
        envs.make(env_cfg(action_repeat=0))


def test_action_repeat_stops_at_success():
    """The expert, held for 4 simulator steps, succeeds in about a quarter of the env steps."""
    lengths = {}
    for repeat in (1, 4):
        v = envs.make(env_cfg(tasks="[reach-v3]", num_envs=1, max_episode_steps=150, action_repeat=repeat))
        obs = v.reset(seed=0)
        expert = envs.make_expert("metaworld", "reach-v3")
        for steps in range(1, 151):  # noqa: B007 - read after the loop
            obs, reward, term, trunc, info = v.step(expert(obs["state"][0])[None])
            if term[0]:
                break
        assert term[0] and reward[0] == 1.0 and info["episode_length"][0] == steps
        lengths[repeat] = steps
        v.close()
    assert lengths[4] <= lengths[1] / 3


def test_eval_init_states_are_fixed_and_selectable():
    cfg = env_cfg(num_eval_init_states=3)
    v = envs.make(cfg)
    states = v.backend.eval_init_states("reach-v3")
    assert states.shape[0] == 3 and len(np.unique(states, axis=0)) == 3
    other = envs.make(cfg).backend.eval_init_states("reach-v3")
    np.testing.assert_array_equal(states, other)  # the same set from a fresh backend
    a = v.reset(seed=0, options={"init_state": [2, 0]})
    b = v.reset(seed=99, options={"init_state": [2, 0]})
    np.testing.assert_array_equal(a["state"], b["state"])  # the seed does not matter for fixed states
    np.testing.assert_allclose(a["state"][0, 36:], states[2][-3:], atol=1e-6)  # reach: goal = rand_vec[3:]
    v.close()


def test_init_seed_option_gives_identical_starts(venv):
    a = venv.reset(seed=0, options={"task": ["reach-v3", "reach-v3"], "init_seed": [7, 7]})
    np.testing.assert_array_equal(a["state"][0], a["state"][1])
    b = venv.reset(seed=1, options={"task": ["reach-v3", "reach-v3"], "init_seed": [7, 8]})
    np.testing.assert_array_equal(a["state"][0], b["state"][0])
    assert not np.array_equal(b["state"][0], b["state"][1])


def test_reset_option_changes_task(venv):
    obs = venv.reset(seed=0, options={"task": ["push-v3", None]})
    assert obs["instruction"] == [INSTRUCTIONS["push-v3"]] * 2
    with pytest.raises(ValueError, match="unknown task"):
        venv.reset(options={"task": ["door-open-v3", None]})
    with pytest.raises(ValueError, match="valid: "):
        venv.reset(options={"bogus": [1, 2]})


def test_task_changes_reuse_idle_simulators(venv):
    """Slots that swap tasks swap simulators (none is built), and the episodes equal a fresh env's."""
    venv.reset(seed=0)
    made = []
    make_env = venv.backend.make_env
    venv.backend.make_env = lambda task: made.append(task) or make_env(task)
    rng = np.random.default_rng(0)
    for tasks in (["push-v3", "reach-v3"], ["reach-v3", "push-v3"], ["push-v3", "reach-v3"]):
        obs = venv.reset(seed=4, options={"task": tasks, "init_seed": [7, 7]})
        fresh = envs.make(env_cfg())
        fresh_obs = fresh.reset(seed=4, options={"task": tasks, "init_seed": [7, 7]})
        actions = rng.uniform(-1, 1, (2, 4))
        np.testing.assert_array_equal(venv.step(actions)[0]["state"], fresh.step(actions)[0]["state"])
        np.testing.assert_array_equal(obs["image"], fresh_obs["image"])
        fresh.close()
    assert made == []
    venv.reset(options={"task": ["push-v3", "push-v3"]})  # a second push is built; the idle reach is closed
    assert made == ["push-v3"]


def test_no_rendering_mode():
    v = envs.make(env_cfg(cameras="[]"))
    obs = v.reset(seed=0)
    assert obs["image"].shape == (2, 0, 32, 32, 3)
    v.close()


def test_goal_marker_is_drawn():
    with_marker = envs.make(env_cfg(tasks="[reach-v3]", num_envs=1, image_size=64))
    without = envs.make(env_cfg(tasks="[reach-v3]", num_envs=1, image_size=64, goal_marker_size=0))
    assert goal_marker_mask(with_marker.reset(seed=0)["image"]).sum() >= 4  # a 5 cm green sphere, ~3x3 px at 64 px
    assert goal_marker_mask(without.reset(seed=0)["image"]).sum() == 0  # nothing else in the scene is pure green
    with_marker.close(), without.close()


def test_first_frame_draws_this_episodes_goal():
    """MetaWorld moves the goal site in the model at reset; the first frame must show the new goal, not the
    previous episode's (then a fixed initial state's first image would depend on what ran before it)."""
    v = envs.make(env_cfg(tasks="[reach-v3]", num_envs=1, image_size=64))
    first = [v.reset(options={"init_seed": [seed]})["image"] for seed in (11, 22, 11)]
    assert not np.array_equal(first[0], first[1])  # another goal, drawn elsewhere
    np.testing.assert_array_equal(first[0], first[2])
    stepped = v.step(np.zeros((1, v.spec.action_dim), np.float32))[0]["image"]
    centre = [np.argwhere(goal_marker_mask(im[0, 0])).mean(0) for im in (first[2], stepped)]
    np.testing.assert_allclose(centre[0], centre[1], atol=1.0)  # the marker stays put once the physics runs
    v.close()


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="known backends: libero, maniskill, metaworld, toy"):
        envs.make(env_cfg(backend="nosuchsim"))
    with pytest.raises(ValueError, match="unknown MetaWorld task 'reach'.*reach-v3"):
        envs.make(env_cfg(tasks="[reach]"))
    with pytest.raises(ValueError, match="unknown MetaWorld camera 'front'.*corner"):
        envs.make(env_cfg(cameras="[front]")).reset(seed=0)
    with pytest.raises(ValueError, match="MT1, MT10, MT50, custom"):
        envs.make(env_cfg(task_set="MT20"))


def test_subprocess_equals_in_process():
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-1, 1, (3, 2, 4)) for _ in range(12)]
    results = []
    for workers in (0, 2):
        v = envs.make(env_cfg(num_envs=3, num_workers=workers, max_episode_steps=9))
        results.append(_rollout(v, 11, actions))
        v.close()
    a, b = results
    for k in ("image", "proprio", "state", "instruction"):
        np.testing.assert_array_equal(a[0][k], b[0][k])
    for (oa, *ra), (ob, *rb) in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(oa["state"], ob["state"])
        for x, y in zip(ra[:3], rb[:3]):
            np.testing.assert_array_equal(x, y)
        for key in ("final_state", "valid", "episode_length", "success"):
            np.testing.assert_array_equal(ra[3][key], rb[3][key])


def test_crashed_worker_is_restarted():
    v = envs.make(env_cfg(num_envs=2, num_workers=2))
    v.reset(seed=0)
    v.step(np.zeros((2, 4)))
    os.kill(v._procs[1].pid, signal.SIGKILL)
    time.sleep(0.3)
    obs, reward, term, trunc, info = v.step(np.zeros((2, 4)))
    assert info["worker_restarted"].tolist() == [False, True]
    assert trunc.tolist() == [False, True] and v.restarts == 1
    assert info["task_index"].tolist() == [0, 1]
    obs, reward, term, trunc, info = v.step(np.zeros((2, 4)))  # keeps working
    assert not info["worker_restarted"].any() and obs["image"].std() > 5
    v.close()


class _GoneDriver:
    """The worker's end of a pipe whose driver was killed: commands were queued, every answer breaks the pipe."""

    def __init__(self, commands):
        self.commands, self.closed = list(commands), False

    def recv(self):
        return self.commands.pop(0)

    def send(self, message):
        raise BrokenPipeError(32, "Broken pipe")

    def close(self):
        self.closed = True


def test_worker_stops_quietly_when_its_driver_is_gone(monkeypatch, capfd):
    # a killed run's workers printed two chained BrokenPipeError tracebacks each into the run's log
    from vlarl.envs import subproc

    monkeypatch.setattr(subproc, "apply_thread_plan", lambda role: None)  # keep this process's threads
    v = envs.make(env_cfg(num_envs=1, num_workers=1))
    conn = _GoneDriver([("reset", (0, None)), ("reset", (1, None))])
    try:
        subproc._worker(conn, v.cfg, v.slices[0], v._buffers, v._shapes, v._dtypes)  # returns, raises nothing
    finally:
        v.close()
    assert conn.closed and conn.commands == [("reset", (1, None))]  # stopped at the first broken answer
    assert "Traceback" not in capfd.readouterr().err


def test_worker_errors_surface_with_traceback():
    v = envs.make(env_cfg(num_workers=1, cameras="[front]"))
    with pytest.raises(RuntimeError, match="unknown MetaWorld camera"):
        v.reset(seed=0)
    v.close()
