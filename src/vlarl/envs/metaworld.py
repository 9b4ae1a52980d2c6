"""MetaWorld v3 backend (the embedded default simulator); install with ``pip install 'vlarl[metaworld]'``.

- Task sets: ``MT1`` (one task from ``env.tasks``), ``MT10``, ``MT50``, ``custom`` (``env.tasks``).
- Goal-observable variants: the goal is in ``obs['state']`` (for experts) and drawn in the image as a
  green sphere of radius ``goal_marker_size`` (MetaWorld's goal sites are tiny or hidden), so a policy that
  sees only images, instruction and proprio can tell where to go. Tasks whose goal is an object
  itself (buttons, handles, doors) need no marker.
- Rendering defaults to the fast software-GL settings (no shadows, reflections or anti-aliasing:
  about 2.5x faster than MetaWorld's look on llvmpipe); ``env.shadows/reflections/antialias``.
  ``env.render_meshes=simplified`` draws simplified copies of the meshes (``vlarl.envs.meshes``): faster
  still, physics unchanged.
- Cameras are MetaWorld's named cameras (``corner``, ``corner2``, ``corner3``, ``corner4``,
  ``topview``, ``behindGripper``, ``gripperPOV``); MuJoCo renders them upside down and we flip them.
- ``proprio`` = end-effector xyz and gripper opening (4); ``state`` = MetaWorld's 39-dim observation.
- Rewards: ``sparse`` 1 on the success step; ``dense`` MetaWorld's shaped reward (0-10 per simulator step,
  summed over ``action_repeat``); ``shaped`` the sparse reward plus potential-based shaping
  ``phi(s') - phi(s)``, with phi = MetaWorld's shaped reward of the last simulator step / 10 (0 at reset).
  An episode's shaped return is its success plus phi at its end (the terms telescope), so unlike ``dense``,
  hovering near the goal never pays more than finishing: success ends the episode, as always.
- Initial states are MetaWorld's own ``rand_vec`` (object and goal positions), drawn with its own
  rejection rules from the env's generator. Evaluation sets are ``num_eval_init_states`` draws per
  task from a generator seeded by (``eval_seed``, task), disjoint from training draws.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import numpy as np

from vlarl.envs import meshes
from vlarl.envs.base import EnvSpec, config_spec, eval_rng
from vlarl.envs.gl import ensure_gl

GOAL_MARKER_RGBA = (0.1, 0.9, 0.1, 1.0)  # green: MetaWorld's own goal sites are red, like the Sawyer arm


def goal_marker_mask(image: np.ndarray) -> np.ndarray:
    """``[..., H, W]`` bool: the pixels of ``image [..., H, W, 3]`` (uint8) that show the goal marker's green."""
    r, g, b = np.moveaxis(image.astype(int), -1, 0)
    return (g > 150) & (r < 100) & (b < 100)


MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)

INSTRUCTIONS = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick up the puck from one bin and place it into the other bin",
    "box-close-v3": "pick up the lid and close the box with it",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button behind the wall from the top",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button behind the wall from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial",
    "disassemble-v3": "pick the nut off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by rotating the lock clockwise",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by rotating the lock counter-clockwise",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-open-v3": "rotate the faucet handle counter-clockwise",
    "faucet-close-v3": "rotate the faucet handle clockwise",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down sideways",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up sideways",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg sideways",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "pick up the puck and place it onto the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "push the window open",
    "window-close-v3": "push the window closed",
}
MT50 = tuple(INSTRUCTIONS)
TASK_SETS = {"MT10": MT10, "MT50": MT50}
PROPRIO_DIM, STATE_DIM, ACTION_DIM = 4, 39, 4


def resolve_tasks(task_set: str, tasks: list[str]) -> tuple[str, ...]:
    """Task names of a config; unknown sets/tasks raise with the valid choices."""
    for t in tasks:
        if t not in INSTRUCTIONS:
            raise ValueError(f"unknown MetaWorld task {t!r}; tasks: {', '.join(MT50)}")
    if task_set in ("MT1", "custom"):
        if not tasks or (task_set == "MT1" and len(tasks) != 1):
            raise ValueError(f"task_set={task_set} needs env.tasks ({'one task' if task_set == 'MT1' else 'a list'})")
        return tuple(tasks)
    if task_set not in TASK_SETS:
        raise ValueError(f"unknown MetaWorld task set {task_set!r}; choose one of MT1, MT10, MT50, custom")
    return tuple(t for t in TASK_SETS[task_set] if not tasks or t in tasks)


class MetaWorldEnv:
    """One MetaWorld task with rendering (see the module docstring)."""

    def __init__(self, task: str, cfg: Any):
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.task = task
        self.instruction = INSTRUCTIONS[task]
        self.env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"](seed=0)
        self.env.max_path_length = np.iinfo(np.int64).max  # vlarl truncates; MetaWorld would raise
        self.reward = cfg.reward
        self.phi = 0.0  # the shaping potential of the current state (``shaped``)
        self.repeat = cfg.action_repeat
        self.cameras = list(cfg.cameras)
        self.image_size = cfg.image_size
        model = self.env.model
        if cfg.goal_marker_size > 0:
            for i in range(model.nsite):
                if model.site(i).name == "goal":
                    model.site_rgba[i] = GOAL_MARKER_RGBA
                    model.site_size[i, 0] = cfg.goal_marker_size
        self.renderer = None
        if self.cameras:
            valid = [model.camera(i).name for i in range(model.ncam)]
            for cam in self.cameras:
                if cam not in valid:
                    raise ValueError(f"unknown MetaWorld camera {cam!r}; cameras: {', '.join(valid)}")
            model.vis.quality.offsamples = 4 if cfg.antialias else 0
            if not cfg.shadows:  # no 4096^2 shadow map: ~75 MB less per renderer, same images
                model.vis.quality.shadowsize = 0
            make = meshes.simplified_renderer if cfg.render_meshes == "simplified" else mujoco.Renderer
            self.renderer = make(model, cfg.image_size, cfg.image_size)
            flags = self.renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(cfg.shadows)
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = bool(cfg.reflections)
        self.init_state: np.ndarray | None = None
        self._forward = mujoco.mj_forward

    def observe(self) -> dict[str, np.ndarray]:
        """Renders each camera at the current state (see ``SingleEnv.observe``)."""
        views = []
        for cam in self.cameras:
            self.renderer.update_scene(self.env.data, camera=cam)
            views.append(self.renderer.render()[::-1])
        image = np.stack(views) if views else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        raw = self._raw.astype(np.float32)
        return {"image": image, "proprio": raw[:PROPRIO_DIM].copy(), "state": raw}

    def reset(self, init_state: np.ndarray | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Start from ``init_state`` (a rand_vec), or draw one from ``rng`` with MetaWorld's rules."""
        env = self.env
        if init_state is None:
            env._freeze_rand_vec, env.seeded_rand_vec, env.np_random = False, True, rng
        else:
            env._freeze_rand_vec, env._last_rand_vec = True, np.asarray(init_state, np.float64)
        self._raw, _ = env.reset()
        self._forward(env.model, env.data)  # MetaWorld moves goal sites in the model: else frame 0 drew the last goal
        self.phi = 0.0
        self.init_state = env._last_rand_vec.copy()
        env._freeze_rand_vec = True
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[float, bool]:
        """``action`` held for ``action_repeat`` simulator steps (to the first success); the reward of
        ``env.reward`` (see the module docstring). Renders nothing: ``observe`` does."""
        total, success = 0.0, False
        for _ in range(self.repeat):
            self._raw, reward, _, _, info = self.env.step(action)
            total += float(reward)
            success = bool(info["success"])
            if success:
                break
        if self.reward == "dense":
            return total, success
        if self.reward == "shaped":
            phi = float(reward) / 10.0
            shaping, self.phi = phi - self.phi, phi
            return float(success) + shaping, success
        return float(success), success

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        self.env.close()


class MetaWorldBackend:
    """Builds MetaWorld envs for a config and owns the fixed evaluation initial states."""

    def __init__(self, cfg: Any):
        ensure_gl()
        self.cfg = cfg
        self.tasks = resolve_tasks(cfg.task_set, list(cfg.tasks))

    def make_env(self, task: str) -> MetaWorldEnv:
        return MetaWorldEnv(task, self.cfg)

    @functools.cache  # noqa: B019 - one backend per vector env, few tasks
    def eval_init_states(self, task: str) -> np.ndarray:
        """``[num_eval_init_states, D]`` rand_vecs, the same in every process for the same config."""
        scratch = MetaWorldEnv(task, _no_render(self.cfg))
        rng = eval_rng(self.cfg, task)
        states = []
        for _ in range(self.cfg.num_eval_init_states):
            scratch.reset(None, rng)
            states.append(scratch.init_state)
        scratch.close()
        return np.stack(states)

    def spec(self, num_envs: int) -> EnvSpec:
        dims = (ACTION_DIM, PROPRIO_DIM, STATE_DIM)
        return config_spec(self.cfg, num_envs, dims, {t: INSTRUCTIONS[t] for t in self.tasks})


def _no_render(cfg: Any) -> Any:
    return dataclasses.replace(cfg, cameras=[])


class MetaWorldExpert:
    """MetaWorld's scripted policy for a task; reads the privileged ``state`` (39-dim)."""

    def __init__(self, task: str):
        from metaworld.policies import ENV_POLICY_MAP

        self.policy = ENV_POLICY_MAP[task]()

    def __call__(self, state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # MetaWorld warns that its gains exceed the action range
            warnings.simplefilter("ignore", UserWarning)
            action = self.policy.get_action(state.astype(np.float64))
        return np.clip(action, -1.0, 1.0)
