"""Success curriculum: hand-computed weights, window, sampling frequencies, state round trip."""

import numpy as np
import pytest

from vlarl.envs.curriculum import SuccessCurriculum

TASKS = ["reach", "drawer", "button"]


def test_weights_by_hand():
    cur = SuccessCurriculum(TASKS, window=4, group_size=4, floor=0.05)
    cur.update(["reach"] * 5, [True, True, False, False, False])  # window keeps the last 4: T F F F
    cur.update(["drawer"] * 4, [True] * 4)
    assert cur.rates() == pytest.approx([0.25, 1.0, 0.5])  # button has no history: 0.5
    raw = np.array([1 - 0.25**4 - 0.75**4, 0.05, 1 - 2 * 0.5**4])  # 0.6796875, floor, 0.875
    assert cur.weights() == pytest.approx(raw / raw.sum())


def test_weight_is_the_chance_of_a_mixed_group():
    """Slow reference: simulate groups of 4 episodes at the task's success rate."""
    cur = SuccessCurriculum(["a", "b"], window=10, group_size=4, floor=1e-6)
    cur.update(["a"] * 10, [True] * 3 + [False] * 7)
    cur.update(["b"] * 10, [True] * 9 + [False])
    rng = np.random.default_rng(0)
    mixed = []
    for s in (0.3, 0.9):
        wins = (rng.random((100_000, 4)) < s).sum(1)
        mixed.append(((wins > 0) & (wins < 4)).mean())
    assert cur.weights() == pytest.approx(np.array(mixed) / sum(mixed), abs=5e-3)


def test_ppo_uses_pairs_and_sampling_follows_weights():
    cur = SuccessCurriculum(TASKS, window=10, group_size=1)
    cur.update(["reach"] * 2, [True, False])  # s = 0.5: 1 - 2 * 0.25 = 0.5 for pairs
    cur.update(["drawer"] * 2, [True, True])
    weights = cur.weights()
    assert weights == pytest.approx(np.array([0.5, 0.05, 0.5]) / 1.05)
    draws = cur.sample(30_000, np.random.default_rng(1))
    freq = [draws.count(t) / len(draws) for t in TASKS]
    assert freq == pytest.approx(weights, abs=0.01)


def test_state_round_trip_and_bad_settings():
    cur = SuccessCurriculum(TASKS, window=3)
    cur.update(["button", "button", "reach"], [True, False, True])
    other = SuccessCurriculum(TASKS, window=3)
    other.load_state_dict(cur.state_dict())
    assert other.state_dict() == {"reach": [True], "drawer": [], "button": [True, False]}
    assert other.weights() == pytest.approx(cur.weights())
    with pytest.raises(ValueError, match="window"):
        SuccessCurriculum(TASKS, window=0)
    with pytest.raises(KeyError):
        cur.update(["unknown"], [True])


def test_group_schedule_fixed_states_round_robin_and_curriculum():
    from vlarl.envs.curriculum import GroupSchedule, parse_fixed_states

    rng = np.random.default_rng(0)
    fixed = parse_fixed_states(["reach@5", "drawer@-2"], TASKS)
    tasks, seeds = GroupSchedule(TASKS, TASKS * 2, 2, fixed)(iteration=4, rnd=1, rng=rng)  # states (3 + g) % 2
    assert tasks == ["drawer", "drawer", "reach", "reach", "drawer", "drawer"] and seeds == [-2, -2, 5, 5, -2, -2]
    tasks, seeds = GroupSchedule(TASKS, TASKS * 2, 2)(iteration=1, rnd=0, rng=rng)
    assert tasks == ["reach", "reach", "drawer", "drawer", "button", "button"]  # offset 1 * 3 groups + 0
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3]
    tasks, _ = GroupSchedule(TASKS, TASKS * 2, 1)(iteration=3, rnd=2, rng=rng)
    assert tasks == list(TASKS * 2)  # ungrouped: every env keeps its own task
    cur = SuccessCurriculum(TASKS)
    cur.update(["reach"] * 20, [True] * 20)  # solved: drawn at the floor weight only
    tasks, _ = GroupSchedule(TASKS, TASKS * 20, 1, curriculum=cur)(0, 0, rng)
    assert tasks.count("reach") < 10
    with pytest.raises(ValueError, match="use trainer.curriculum=none"):
        GroupSchedule(TASKS, TASKS, 1, fixed, cur)
    with pytest.raises(ValueError, match=r"'reach@x' is not 'task@seed' with a task of \['reach'"):
        parse_fixed_states(["reach@x"], TASKS)
