"""The toy backend: what it draws, its expert, seeding, and its config errors."""

from __future__ import annotations

import numpy as np
import pytest

from vlarl import envs
from vlarl.config import load_config
from vlarl.envs import toy


def _cfg(*extra):
    base = ["env.backend=toy", "env.task_set=all", "env.cameras=[top]", "env.image_size=64", "env.num_workers=0"]
    return load_config("demos", overrides=[*base, *extra]).env


def _pixel(xy, size=64):
    """The (row, col) of the pixel whose centre is nearest to ``xy`` (y up)."""
    col = int((xy[0] + 1) / 2 * size)
    row = int((1 - xy[1]) / 2 * size)
    return min(row, size - 1), min(col, size - 1)


def test_image_shows_each_disc_in_its_colour_and_the_gripper_in_white():
    gripper = np.array([0.1, -0.05])
    discs = np.array([[-0.6, 0.6], [0.6, 0.55], [0.55, -0.6]])
    image = toy.draw(gripper, discs, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    for disc, colour in zip(discs, toy.COLOURS.values()):
        assert tuple(image[_pixel(disc)]) == colour
    assert tuple(image[_pixel(gripper)]) == toy.GRIPPER
    assert tuple(image[_pixel([0.0, 0.95])]) == toy.TABLE  # the top edge's middle is empty table
    assert tuple(image[48, 16]) == toy.TABLE  # y points up: nothing is drawn at the mirror image of disc 0


def test_observation_state_and_instruction_match_the_scene():
    venv = envs.make(_cfg("env.num_envs=3"))
    obs = venv.reset(seed=0)
    assert obs["image"].shape == (3, 1, 64, 64, 3)
    assert obs["instruction"] == ["move to the red disc", "move to the green disc", "move to the blue disc"]
    for b in range(3):
        state = obs["state"][b]
        np.testing.assert_array_equal(state[:2], obs["proprio"][b])
        np.testing.assert_array_equal(state[8:], np.eye(3)[b])  # the one-hot of the named disc
        named_disc = state[2 + 2 * b : 4 + 2 * b]
        assert tuple(obs["image"][b, 0][_pixel(named_disc)]) == list(toy.COLOURS.values())[b]


def test_expert_solves_every_eval_state_and_a_still_policy_solves_none():
    cfg = _cfg("env.num_envs=3", "env.num_eval_init_states=20", "env.max_episode_steps=12")
    venv = envs.make(cfg)
    experts = [envs.make_expert("toy", t) for t in venv.spec.env_tasks]
    for still in (False, True):
        lengths, successes = [], []
        for i in range(cfg.num_eval_init_states):
            obs = venv.reset(options={"init_state": [i] * 3})
            done = np.zeros(3, bool)
            while not done.all():
                act = np.zeros((3, 2)) if still else np.stack([e(s) for e, s in zip(experts, obs["state"])])
                obs, reward, term, trunc, info = venv.step(act)
                for b in np.flatnonzero((term | trunc) & ~done):
                    successes.append(info["episode_success"][b])
                    lengths.append(info["episode_length"][b])
                    assert reward[b] == float(term[b])  # sparse: 1 on the success step only
                done |= term | trunc
        if still:
            assert not any(successes) and set(lengths) == {12}  # START keeps the gripper off every disc
        else:
            assert all(successes) and max(lengths) <= 6


def test_init_seed_repeats_a_start_and_eval_states_are_fixed():
    venv = envs.make(_cfg("env.num_envs=2", "env.tasks=[reach-red]", "env.task_set=custom"))
    a = venv.reset(options={"init_seed": [5, 5]})
    np.testing.assert_array_equal(a["image"][0], a["image"][1])
    b = venv.reset(options={"init_seed": [6, 6]})
    assert not np.array_equal(a["image"][0], b["image"][0])
    again = envs.make_backend(_cfg("env.tasks=[reach-red]", "env.task_set=custom"))
    np.testing.assert_array_equal(again.eval_init_states("reach-red"), venv.backend.eval_init_states("reach-red"))


def test_dense_reward_is_minus_the_distance_to_the_named_disc():
    venv = envs.make(_cfg("env.num_envs=1", "env.tasks=[reach-blue]", "env.task_set=custom", "env.reward=dense"))
    obs = venv.reset(seed=3)
    _, reward, *_ = venv.step(np.array([[0.0, 0.0]]))
    state = obs["state"][0]
    assert reward[0] == pytest.approx(-np.linalg.norm(state[:2] - state[6:8]), abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env.cameras=[corner]"], "one camera: 'top'"),
        (["env.task_set=custom", "env.tasks=[reach-v3]"], "unknown toy tasks ['reach-v3']"),
        (["env.task_set=MT10"], "choose one of custom, MT1, all"),
        (["env.task_set=custom"], "needs env.tasks"),
    ],
)
def test_bad_toy_config_names_what_is_valid(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        envs.make_backend(_cfg(*overrides))
