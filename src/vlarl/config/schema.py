"""Config dataclasses, one per component, composed into one root config per command.

Every field carries its help text in ``metadata["help"]``; ``vlarl <command> --help`` prints it.
OmegaConf turns these dataclasses into structured configs, which check keys and types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def doc(default: Any, help: str) -> Any:
    """A dataclass field with a default (lists/dicts are copied per instance) and its help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig:
    """Where a run writes and how it is seeded."""

    name: str = doc("", "Run name; empty means '<command>-<preset>-<timestamp>'.")
    output_dir: str = doc("runs", "Parent folder of run folders; the resolved config is saved in each.")
    seed: int = doc(0, "Global seed (envs, sampling, initialisation).")


@dataclass
class EnvConfig:
    """A vector of simulator instances behind the `VectorEnv` interface."""

    backend: str = doc("metaworld", "Simulator backend name (see `vlarl.envs.available()`).")
    task_set: str = doc("MT10", "Task set: 'MT1' (one task, given in `tasks`), 'MT10', 'MT50' or 'custom'.")
    tasks: list[str] = doc([], "Task names; required for MT1/custom, a subset filter otherwise.")
    num_envs: int = doc(10, "Number of parallel envs B; env b runs task b % len(tasks).")
    num_workers: int = doc(1, "Worker processes; 0 runs the envs in this process (no subprocess).")
    cameras: list[str] = doc(["corner"], "Camera names rendered into obs['image'] (V views); [] renders nothing.")
    image_size: int = doc(128, "Square image side in pixels (16-512; 64-224 typical).")
    shadows: bool = doc(False, "Render shadows (about 4x slower on software GL).")
    reflections: bool = doc(False, "Render reflections (about 1.3x slower on software GL).")
    antialias: bool = doc(False, "4x multisample anti-aliasing (about 1.7x slower on software GL).")
    goal_marker_size: float = doc(
        0.03, "Radius (m) of the rendered goal marker; 0 keeps MetaWorld's own (often hidden) sites."
    )
    max_episode_steps: int = doc(200, "Steps before an episode is truncated.")
    terminate_on_success: bool = doc(True, "End the episode (terminated=True) on the first success.")
    reward: str = doc("sparse", "'sparse': 1 on the success step, else 0; 'dense': the simulator's shaped reward.")
    num_eval_init_states: int = doc(50, "Size of the fixed, seeded evaluation initial-state set per task.")
    eval_seed: int = doc(1234, "Seed of the evaluation initial-state sets (disjoint from training draws).")


@dataclass
class DemosConfig:
    """Scripted-expert demonstration collection."""

    episodes_per_task: int = doc(20, "Episodes attempted per task.")
    action_noise: float = doc(0.0, "Std of Gaussian noise added to expert actions (then clipped to [-1, 1]).")
    keep: str = doc("success", "Which episodes to write: 'success' or 'all'.")
    output: str = doc("", "Dataset folder; empty means 'data/demos/<preset>'.")
    overwrite: bool = doc(False, "Recollect even when a dataset with the same config exists.")


@dataclass
class DemosCommand:
    """`vlarl demos`: run scripted experts and write a demonstrations dataset."""

    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)


COMMANDS: dict[str, type] = {"demos": DemosCommand}
