"""ManiSkill3 backend (SAPIEN, rendered with Vulkan); install with ``pip install 'vlarl[maniskill]'``.

- Tasks are the tabletop tasks whose assets ship in the ``mani-skill`` wheel and whose robot takes the 7-dim
  ``pd_ee_delta_pose`` control (``TASKS``; ``task_set=custom`` with ``env.tasks``, or ``all``). Tasks that need
  downloaded assets (YCB, PartNet-Mobility) are refused with the reason, before ManiSkill would prompt for a
  download.
- One simulator per env on the CPU sim backend (ManiSkill allows one env per process there): parallelism comes
  from ``env.num_workers`` processes, as for the other backends.
- Actions: ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` in [-1, 1]: up to 0.1 m and 0.1 rad per step in the
  robot's base frame; gripper -1 closed, +1 open.
- Cameras are the task's sensors: ``base_camera`` (all tasks) and ``hand_camera`` (tasks on ``panda_wristcam``).
- ``proprio [8]``: tool-centre-point xyz, its orientation as an axis-angle, the two finger positions.
  ``state [30]``: TCP pose (xyz, quaternion wxyz), the two finger positions, then the poses (xyz, wxyz) of up to
  three task objects (``TASKS[task].objects``, zero-padded): what the scripted experts read.
- Initial states are ManiSkill's seeded episode randomisation: an initial state is ``[seed]``. Training draws
  even seeds; evaluation sets are ``num_eval_init_states`` odd seeds per task drawn from (``eval_seed``, task),
  so the two never meet.
- Rewards: ``sparse`` is 1 on success; ``dense`` is ManiSkill's ``normalized_dense`` reward (in [0, 1]).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlarl.envs.base import EnvSpec, config_spec, eval_rng
from vlarl.envs.geometry import axis_angle, yaw
from vlarl.envs.gl import ensure_gl

ACTION_DIM, PROPRIO_DIM, STATE_DIM = 7, 8, 30
MAX_OBJECTS = 3
CAMERAS = ("base_camera", "hand_camera")
SEED_RANGE = 2**23  # seeds are 2k (training) or 2k+1 (evaluation), k < 2^23: exact in a float32 init state
OPEN, CLOSED = 1.0, -1.0
STEP_M = 0.1  # metres per unit of a pd_ee_delta_pose translation action


@dataclass(frozen=True)
class Task:
    instruction: str
    objects: tuple[str, ...]  # attributes of ManiSkill's env holding the actors the state reports, in order


TASKS = {
    "PickCube-v1": Task("pick up the red cube and move it to the goal", ("cube", "goal_site")),
    "PushCube-v1": Task("push the cube to the red and white target", ("obj", "goal_region")),
    "PullCube-v1": Task("pull the cube onto the red and white target", ("obj", "goal_region")),
    "StackCube-v1": Task("stack the red cube on top of the green cube", ("cubeA", "cubeB")),
    "PokeCube-v1": Task("poke the red cube with the peg to the target", ("peg", "cube", "goal_region")),
    "PlaceSphere-v1": Task("place the sphere into the bin", ("obj", "bin")),
    "RollBall-v1": Task("roll the ball to the target", ("ball", "goal_region")),
    "LiftPegUpright-v1": Task("stand the peg upright", ("peg",)),
    "PegInsertionSide-v1": Task("insert the peg into the hole in the box", ("peg", "box")),
    "PlugCharger-v1": Task("plug the charger into the receptacle", ("charger", "receptacle")),
    "PullCubeTool-v1": Task("use the tool to pull the cube closer", ("l_shape_tool", "cube")),
}


def _registry() -> dict[str, Any]:
    """ManiSkill's registered envs (importing ``mani_skill.envs`` registers them), its logger quietened; a headless
    GL backend is chosen first, since that import also imports mujoco, which reads ``MUJOCO_GL`` once."""
    ensure_gl()
    logging.getLogger("mani_skill").setLevel(logging.ERROR)
    import mani_skill.envs  # noqa: F401
    from mani_skill.utils.registration import REGISTERED_ENVS

    return REGISTERED_ENVS


def resolve_tasks(task_set: str, tasks: list[str]) -> tuple[str, ...]:
    """Task names of a config: ``all`` (filtered by ``tasks`` if given) or ``custom`` ``tasks``."""
    for task in tasks:
        if task in TASKS:
            continue
        spec = _registry().get(task)
        if spec is not None and spec.asset_download_ids:
            raise ValueError(
                f"ManiSkill task {task!r} needs assets downloaded ({', '.join(spec.asset_download_ids)}), which "
                f"vlarl does not do; tasks whose assets ship with mani-skill: {', '.join(TASKS)}"
            )
        raise ValueError(f"unknown ManiSkill task {task!r}; tasks: {', '.join(TASKS)}")
    if task_set == "custom":
        if not tasks:
            raise ValueError(f"ManiSkill task_set=custom needs env.tasks (from: {', '.join(TASKS)})")
        return tuple(tasks)
    if task_set != "all":
        raise ValueError(f"unknown ManiSkill task set {task_set!r}; choose 'all' or 'custom'")
    return tuple(t for t in TASKS if not tasks or t in tasks)


def _vulkan_error(e: RuntimeError) -> RuntimeError:
    return RuntimeError(
        f"ManiSkill found no Vulkan device ({e}). SAPIEN needs one even without cameras; on a CPU-only Debian 12, "
        "Mesa 25's lavapipe from bookworm-backports works: run scripts/vulkan-backports.sh (make test does)."
    )


def _pose(entity: Any) -> np.ndarray:
    """``[7]``: xyz and quaternion wxyz of a ManiSkill actor or link (its first and only sub-scene)."""
    return np.concatenate([entity.pose.p[0].numpy(), entity.pose.q[0].numpy()])


class ManiSkillEnv:
    """One ManiSkill task on the CPU sim backend (see the module docstring)."""

    def __init__(self, task: str, cfg: Any):
        _registry()
        import gymnasium as gym

        self.task, self.instruction = task, TASKS[task].instruction
        self.cameras, self.size, self.repeat = list(cfg.cameras), cfg.image_size, cfg.action_repeat
        self.dense = cfg.reward == "dense"
        try:
            self.env = gym.make(
                task,
                obs_mode="rgb" if self.cameras else "state_dict",
                control_mode="pd_ee_delta_pose",
                reward_mode="normalized_dense" if self.dense else "sparse",
                sim_backend="cpu",
                render_backend="cpu",
                num_envs=1,
                sensor_configs={"width": self.size, "height": self.size},
            )
        except RuntimeError as e:
            if "device" in str(e) or "vk::" in str(e):
                raise _vulkan_error(e) from e
            raise
        self.sim = self.env.unwrapped
        if self.cameras:
            raw, _ = self.env.reset(seed=0)
            valid = list(raw["sensor_data"])
            bad = [c for c in self.cameras if c not in valid]
            if bad:
                raise ValueError(f"ManiSkill task {task} has no camera {bad}; its cameras: {', '.join(valid)}")
        self.init_state: np.ndarray | None = None

    def observe(self) -> dict[str, np.ndarray]:
        """The observation the simulator made at the last reset or step (see ``SingleEnv.observe``)."""
        raw = self._raw
        views = [raw["sensor_data"][cam]["rgb"][0].numpy() for cam in self.cameras]
        image = np.stack(views) if views else np.zeros((0, self.size, self.size, 3), np.uint8)
        tcp = _pose(self.sim.agent.tcp)
        fingers = self.sim.agent.robot.get_qpos()[0, -2:].numpy()
        objects = np.zeros((MAX_OBJECTS, 7))
        for i, name in enumerate(TASKS[self.task].objects):
            objects[i] = _pose(getattr(self.sim, name))
        quat_xyzw = np.roll(tcp[3:], -1)
        proprio = np.concatenate([tcp[:3], axis_angle(quat_xyzw), fingers])
        state = np.concatenate([tcp, fingers, objects.ravel()])
        return {"image": image, "proprio": proprio.astype(np.float32), "state": state.astype(np.float32)}

    def reset(self, init_state: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Start from ``init_state`` (``[seed]``), or a seed drawn from ``rng``."""
        if init_state is None:
            init_state = np.array([2 * rng.integers(SEED_RANGE)], np.float64)
        self.init_state = np.asarray(init_state, np.float64)
        self._raw, _ = self.env.reset(seed=int(self.init_state[0]))
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[float, bool]:
        """``action [7]`` held for ``action_repeat`` control steps (to the first success)."""
        action = np.asarray(action, np.float32)
        total, success = 0.0, False
        for _ in range(self.repeat):
            self._raw, reward, _, _, info = self.env.step(action)
            total += float(reward)
            success = bool(info["success"][0])
            if success:
                break
        return total if self.dense else float(success), success

    def close(self) -> None:
        self.env.close()


class ManiSkillBackend:
    """Builds ManiSkill envs for a config; evaluation initial states are seeded episode seeds."""

    def __init__(self, cfg: Any):
        bad = [c for c in cfg.cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"unknown ManiSkill cameras {bad}; cameras: {', '.join(CAMERAS)}")
        self.cfg = cfg
        self.tasks = resolve_tasks(cfg.task_set, list(cfg.tasks))

    def make_env(self, task: str) -> ManiSkillEnv:
        return ManiSkillEnv(task, self.cfg)

    @functools.cache  # noqa: B019 - one backend per vector env, few tasks
    def eval_init_states(self, task: str) -> np.ndarray:
        """``[num_eval_init_states, 1]`` odd episode seeds, the same in every process for the same config."""
        rng = eval_rng(self.cfg, task)
        seeds = 2 * rng.choice(SEED_RANGE, size=self.cfg.num_eval_init_states, replace=False) + 1
        return seeds[:, None].astype(np.float64)

    def spec(self, num_envs: int) -> EnvSpec:
        instructions = {t: TASKS[t].instruction for t in self.tasks}
        return config_spec(self.cfg, num_envs, (ACTION_DIM, PROPRIO_DIM, STATE_DIM), instructions)


def _move(tcp: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[3]`` translation action that heads from ``tcp`` to ``target`` (metres), clipped to one step."""
    return np.clip((target - tcp) / STEP_M, -1.0, 1.0)


def _turn(tcp_quat: np.ndarray, obj_quat: np.ndarray, symmetry: float = np.pi / 2) -> float:
    """Yaw action that turns the gripper onto the object's heading modulo ``symmetry`` (its z axis points down,
    so a positive yaw action turns it clockwise seen from above)."""
    err = (yaw(obj_quat) - yaw(tcp_quat) + symmetry / 2) % symmetry - symmetry / 2
    return float(np.clip(-err / 0.1, -1.0, 1.0))


class ManiSkillExpert:
    """A scripted delta-pose expert for ``PickCube``, ``StackCube``, ``PushCube`` and ``PullCube``; reads ``state``.

    A function of the current state only (no memory), so it recovers from perturbed actions: it lines the
    gripper up above the object, descends, grasps, then carries (pick, stack) or pushes (push, pull) it to the
    goal. ManiSkill's own motion-planning solutions need ``mplib`` and joint-position control; these experts
    drive the ``pd_ee_delta_pose`` actions the policies learn.
    """

    TASKS = ("PickCube-v1", "StackCube-v1", "PushCube-v1", "PullCube-v1")
    HALF = 0.02  # cube half size (m)

    def __init__(self, task: str):
        if task not in self.TASKS:
            raise ValueError(f"no scripted ManiSkill expert for {task!r}; experts: {', '.join(self.TASKS)}")
        self.task = task

    def __call__(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, np.float64)
        tcp, tcp_quat, fingers = state[:3], state[3:7], state[7:9]
        obj, target = state[9:16], state[16:23]
        if self.task in ("PushCube-v1", "PullCube-v1"):
            return self._push(tcp, obj[:3], target[:3])
        goal = target[:3] + (np.array([0, 0, 2 * self.HALF + 0.005]) if self.task == "StackCube-v1" else 0.0)
        return self._pick(tcp, tcp_quat, fingers, obj, goal)

    def _pick(self, tcp, tcp_quat, fingers, obj, goal) -> np.ndarray:
        action = np.zeros(ACTION_DIM)
        to_obj = obj[:3] - tcp
        held = np.linalg.norm(to_obj) < self.HALF and fingers.sum() < 2 * self.HALF + 0.01
        if held:
            to_goal = goal - obj[:3]
            if self.task == "StackCube-v1" and np.linalg.norm(to_goal[:2]) < 0.006 and abs(to_goal[2]) < 0.01:
                action[6] = OPEN  # let go on top of the other cube
            else:
                action[:3], action[6] = _move(obj[:3], goal), CLOSED
            return action
        if self.task == "StackCube-v1" and np.linalg.norm(obj[:2] - goal[:2]) < 0.01 and obj[2] > goal[2] - 0.01:
            action[:3], action[6] = _move(tcp, tcp + [0, 0, 0.05]), OPEN  # stacked: back off upwards
            return action
        action[5] = _turn(tcp_quat, obj[3:])
        if np.linalg.norm(to_obj[:2]) > 0.01:  # line up above the object, then descend
            action[:3], action[6] = _move(tcp, obj[:3] + [0, 0, 0.05]), OPEN
        elif to_obj[2] < -0.005:
            action[:3], action[6] = _move(tcp, obj[:3]), OPEN
        else:
            action[6] = CLOSED
        return action

    def _push(self, tcp, obj, goal) -> np.ndarray:
        """Closed gripper: above the point behind the object (seen from the goal), down to it, then through."""
        direction = goal[:2] - obj[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        behind = obj[:2] - direction * (self.HALF + 0.02)
        offset = tcp[:2] - obj[:2]
        across = abs(offset[0] * direction[1] - offset[1] * direction[0])
        if tcp[2] < obj[2] + 0.01 and offset @ direction < -self.HALF and across < 0.012:
            target = np.array([*(obj[:2] + direction * 0.05), obj[2]])  # in line behind it: push
        elif np.linalg.norm(tcp[:2] - behind) < 0.01:
            target = np.array([*behind, obj[2]])
        else:
            target = np.array([*behind, obj[2] + 0.05])
        return np.array([*_move(tcp, target), 0, 0, 0, CLOSED])
