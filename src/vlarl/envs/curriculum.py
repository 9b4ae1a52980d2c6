"""Success-based task curriculum (after VLA-RL): spend rollouts on tasks that still teach something.

Each task keeps its last ``window`` rollout successes. A task's weight is the chance that a group of
``group_size`` episodes of it has mixed outcomes, ``1 - s^n - (1 - s)^n`` for its recent success
rate ``s`` (``n = 2`` for ungrouped PPO): zero-advantage groups (all succeed or all fail) carry no
GRPO signal, and the weight peaks at ``s = 0.5`` as VLA-RL's curriculum aims to. ``floor`` keeps
solved and hopeless tasks in the mix so forgetting shows up; a task without history counts as 0.5.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def parse_fixed_states(entries: list[str], tasks: tuple[str, ...]) -> list[tuple[str, int]]:
    """``['task@seed', ...]`` -> ``[(task, seed), ...]``; names the bad entry and the env's tasks."""
    out = []
    for entry in entries:
        task, _, seed = entry.rpartition("@")
        if task not in tasks or not seed.lstrip("-").isdigit():
            raise ValueError(f"trainer.fixed_states entry {entry!r} is not 'task@seed' with a task of {list(tasks)}")
        out.append((task, int(seed)))
    return out


class GroupSchedule:
    """The task and initial-state seed of each group of a collection round (a group: ``group_size`` envs).

    ``fixed`` ``[(task, seed), ...]`` are taken in turn; else the curriculum draws tasks; else tasks go in turn
    over rounds and iterations (ungrouped: env b keeps its own task). Seeds are drawn from ``rng`` unless fixed.
    """

    def __init__(self, tasks, env_tasks, group_size: int, fixed=(), curriculum=None):
        if fixed and curriculum is not None:
            raise ValueError("trainer.fixed_states picks every group's task and state: use trainer.curriculum=none")
        self.tasks, self.env_tasks, self.n = tuple(tasks), tuple(env_tasks), group_size
        self.fixed, self.curriculum = list(fixed), curriculum

    def __call__(self, iteration: int, rnd: int, rng: np.random.Generator) -> tuple[list[str], list[int]]:
        """Per env ``[B]``: its task and initial-state seed (shared within a group)."""
        groups = len(self.env_tasks) // self.n
        seeds = rng.integers(2**31, size=groups).tolist()
        if self.fixed:
            picked = [self.fixed[(rnd * groups + g) % len(self.fixed)] for g in range(groups)]
            tasks, seeds = [t for t, _ in picked], [s for _, s in picked]
        elif self.curriculum is not None:
            tasks = self.curriculum.sample(groups, rng)
        else:
            offset = iteration * groups + rnd
            tasks = [
                self.tasks[(offset + g) % len(self.tasks)] if self.n > 1 else self.env_tasks[g] for g in range(groups)
            ]
        per_env = range(groups * self.n)
        return [tasks[i // self.n] for i in per_env], [int(seeds[i // self.n]) for i in per_env]


class SuccessCurriculum:
    def __init__(self, tasks: list[str], window: int = 20, group_size: int = 1, floor: float = 0.05):
        if window < 1 or not 0 < floor <= 1:
            raise ValueError(f"curriculum window={window} must be >= 1 and floor={floor} in (0, 1]")
        self.tasks = list(tasks)
        self.n = max(group_size, 2)
        self.floor = floor
        self.history: dict[str, deque[bool]] = {t: deque(maxlen=window) for t in self.tasks}

    def update(self, tasks: list[str], success: list[bool]) -> None:
        """Record one finished episode per (task, success) pair."""
        for task, ok in zip(tasks, success, strict=True):
            self.history[task].append(bool(ok))

    def rates(self) -> np.ndarray:
        """Recent success rate per task ``[len(tasks)]`` (0.5 without history)."""
        return np.array([np.mean(h) if h else 0.5 for h in self.history.values()])

    def weights(self) -> np.ndarray:
        """Sampling probabilities per task ``[len(tasks)]``, summing to 1."""
        s = self.rates()
        w = np.maximum(1 - s**self.n - (1 - s) ** self.n, self.floor)
        return w / w.sum()

    def sample(self, k: int, rng: np.random.Generator) -> list[str]:
        """``k`` task names drawn with replacement by ``weights()``."""
        return [self.tasks[i] for i in rng.choice(len(self.tasks), size=k, p=self.weights())]

    def metrics(self) -> dict[str, float]:
        """``rollout/task_success/<task>`` and ``rollout/task_weight/<task>`` for the run's log."""
        row = {}
        for task, rate, weight in zip(self.tasks, self.rates(), self.weights()):
            row[f"rollout/task_success/{task}"] = float(rate)
            row[f"rollout/task_weight/{task}"] = float(weight)
        return row

    def state_dict(self) -> dict[str, list[bool]]:
        return {t: list(h) for t, h in self.history.items()}

    def load_state_dict(self, state: dict[str, list[bool]]) -> None:
        for task, hist in state.items():
            self.history[task].clear()
            self.history[task].extend(hist)
