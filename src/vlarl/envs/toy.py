"""``toy``: a 2-D reaching task drawn with numpy; no simulator, a few thousand steps per second per core.

The fixture of fast tests and of the learning proof in CI. The scene is a table seen from above with three
coloured discs (red, green, blue) in three of its four corners and the gripper, a white square. Task ``reach-<colour>``:
bring the gripper onto the disc the instruction names. The discs' places are only in the image (proprio is
the gripper's position), so a policy has to see and read to solve it.

- ``action [2]`` in [-1, 1]: a velocity; the gripper moves ``STEP * action`` per env step (``action_repeat``
  times), clipped to the table [-1, 1]^2.
- Success: the gripper within ``RADIUS`` of the named disc's centre. Reward ``sparse`` is 1 on the success
  step; ``dense`` is minus the distance to the named disc.
- ``proprio [2]``: gripper xy. ``state [11]``: gripper xy, the three discs' xy, the one-hot of the named disc
  (for the scripted expert; a policy must not read it).
- Initial states ``[8]`` (gripper xy, disc xys): the discs in three of the four corner ``SLOTS`` (a random
  choice and order, each moved by up to ``JITTER``), the gripper within ``START`` of the centre: which way
  to go is in the colours, two to four steps at full speed. Camera ``top`` only.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vlarl.envs.base import EnvSpec, config_spec, eval_rng

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230)}
TASKS = tuple(f"reach-{c}" for c in COLOURS)
INSTRUCTIONS = {f"reach-{c}": f"move to the {c} disc" for c in COLOURS}
TASK_SETS = ("custom", "MT1", "all")
STEP, RADIUS, JITTER, START = 0.25, 0.2, 0.1, 0.2
SLOTS = np.array([(-0.6, -0.6), (-0.6, 0.6), (0.6, -0.6), (0.6, 0.6)])
ACTION_DIM, PROPRIO_DIM, STATE_DIM = 2, 2, 11
TABLE, GRIPPER = (120, 100, 80), (255, 255, 255)


def draw(gripper: np.ndarray, discs: np.ndarray, size: int) -> np.ndarray:
    """The top view ``[size, size, 3]`` uint8 of a gripper ``[2]`` and discs ``[3, 2]`` (xy in [-1, 1], y up)."""
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = centres[None, :], -centres[:, None]
    image = np.empty((size, size, 3), np.uint8)
    image[:] = TABLE
    for (cx, cy), colour in zip(discs, COLOURS.values()):
        image[(x - cx) ** 2 + (y - cy) ** 2 <= RADIUS**2] = colour
    half = RADIUS / 2
    image[(np.abs(x - gripper[0]) <= half) & (np.abs(y - gripper[1]) <= half)] = GRIPPER
    return image


def sample_init_state(rng: np.random.Generator) -> np.ndarray:
    """``[8]``: gripper xy then the three discs' xy (see the module docstring)."""
    slots = rng.permutation(len(SLOTS))[:3]
    discs = SLOTS[slots] + rng.uniform(-JITTER, JITTER, size=(3, 2))
    gripper = rng.uniform(-START, START, size=2)
    return np.concatenate([gripper, discs.ravel()])


class ToyEnv:
    """One ``reach-<colour>`` task (see the module docstring)."""

    def __init__(self, task: str, cfg: Any):
        self.task, self.instruction = task, INSTRUCTIONS[task]
        self.target = TASKS.index(task)
        self.views, self.size = len(cfg.cameras), cfg.image_size
        self.dense, self.repeat = cfg.reward == "dense", cfg.action_repeat
        self.init_state: np.ndarray | None = None
        self.gripper = np.zeros(2)
        self.discs = np.zeros((3, 2))

    def _distance(self) -> float:
        return float(np.linalg.norm(self.gripper - self.discs[self.target]))

    def observe(self) -> dict[str, np.ndarray]:
        image = np.repeat(draw(self.gripper, self.discs, self.size)[None], self.views, axis=0)
        state = np.concatenate([self.gripper, self.discs.ravel(), np.eye(3)[self.target]]).astype(np.float32)
        return {"image": image, "proprio": self.gripper.astype(np.float32), "state": state}

    def reset(self, init_state: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        self.init_state = sample_init_state(rng) if init_state is None else np.asarray(init_state, float)
        self.gripper, self.discs = self.init_state[:2].copy(), self.init_state[2:].reshape(3, 2).copy()
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[float, bool]:
        success = False
        for _ in range(self.repeat):
            self.gripper = np.clip(self.gripper + STEP * np.asarray(action, float), -1, 1)
            success = self._distance() <= RADIUS
            if success:
                break
        reward = -self._distance() if self.dense else float(success)
        return reward, success

    def close(self) -> None:
        pass


class ToyBackend:
    """Builds toy envs and owns the fixed evaluation initial states (``eval_seed``, task)."""

    def __init__(self, cfg: Any):
        if cfg.task_set not in TASK_SETS:
            raise ValueError(f"toy env.task_set={cfg.task_set!r}; choose one of {', '.join(TASK_SETS)}")
        unknown = [t for t in cfg.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown toy tasks {unknown}; tasks: {', '.join(TASKS)}")
        if cfg.task_set in ("custom", "MT1") and not cfg.tasks:
            raise ValueError(f"toy task_set={cfg.task_set} needs env.tasks (from {', '.join(TASKS)})")
        bad_cameras = [c for c in cfg.cameras if c != "top"]
        if bad_cameras:
            raise ValueError(f"toy cameras {bad_cameras} are unknown; the toy env has one camera: 'top'")
        self.cfg = cfg
        self.tasks = tuple(cfg.tasks) or TASKS

    def make_env(self, task: str) -> ToyEnv:
        return ToyEnv(task, self.cfg)

    @functools.cache  # noqa: B019 - one backend per vector env, few tasks
    def eval_init_states(self, task: str) -> np.ndarray:
        """``[num_eval_init_states, 8]``, seeded by (``eval_seed``, task): disjoint from training draws."""
        rng = eval_rng(self.cfg, task)
        return np.stack([sample_init_state(rng) for _ in range(self.cfg.num_eval_init_states)])

    def spec(self, num_envs: int) -> EnvSpec:
        dims = (ACTION_DIM, PROPRIO_DIM, STATE_DIM)
        return config_spec(self.cfg, num_envs, dims, {t: INSTRUCTIONS[t] for t in self.tasks})


class ToyExpert:
    """Heads straight for the named disc at full speed: ``state [11] -> action [2]``."""

    def __init__(self, task: str):
        self.target = TASKS.index(task)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        gripper, disc = state[:2], state[2 + 2 * self.target : 4 + 2 * self.target]
        return np.clip((disc - gripper) / STEP, -1.0, 1.0)
