"""``vlarl demos``: scripted-expert demonstrations on the vector env, written as a dataset."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from vlarl import envs
from vlarl.config.run import at_defaults, config_hash
from vlarl.config.schema import DemosCommand
from vlarl.data.dataset import DemoDataset, DemoWriter
from vlarl.envs.base import OBS_KEYS


def dataset_path(cfg: DemosCommand) -> Path:
    """The dataset folder: ``demos.output``, or a cache path keyed by the collecting config."""
    if cfg.demos.output:
        return Path(cfg.demos.output)
    return Path("data") / "demos" / f"{cfg.env.backend}-{cfg.env.task_set}-{_fingerprint(cfg)}"


def _fingerprint(cfg: DemosCommand) -> str:
    demos = dataclasses.replace(cfg.demos, output="", overwrite=False)
    env = at_defaults(cfg.env, "eval_only")  # the expert never sees the evaluation states
    return config_hash(env, demos, {"seed": cfg.run.seed})  # the seed matters, the run's name does not


def collect_demos(cfg: DemosCommand, console: Console | None = None) -> Path:
    """Run each task's expert for ``episodes_per_task`` episodes; write the kept ones; return the path.

    An existing dataset made with the same config is reused unless ``demos.overwrite``.
    """
    console = console or Console()
    root = dataset_path(cfg)
    if root.exists() and not cfg.demos.overwrite:
        try:
            if DemoDataset(root).info.get("config_hash") == _fingerprint(cfg):
                console.print(f"[green]demos cached[/] at {root} (demos.overwrite=true recollects)")
                return root
        except (FileNotFoundError, ValueError):
            pass
        raise FileExistsError(f"{root} holds a different dataset; set demos.overwrite=true or another demos.output")
    if cfg.demos.source:
        return import_demos(cfg, root, console)

    venv = envs.make(cfg.env)
    spec = venv.spec
    experts = {t: envs.make_expert(cfg.env.backend, t) for t in spec.tasks}
    rng = np.random.default_rng([cfg.run.seed, 1])
    quota = dict.fromkeys(spec.tasks, cfg.demos.episodes_per_task)
    stats = {t: {"attempts": 0, "success": 0, "steps": 0} for t in spec.tasks}
    writer = DemoWriter(root)
    try:
        obs = venv.reset(seed=cfg.run.seed)
        tasks = spec.env_tasks
        episodes: list[dict[str, list]] = [_new_episode() for _ in tasks]
        bar = tqdm(total=sum(quota.values()), desc="demos", unit="ep")
        while any(quota.values()):
            actions = np.stack([experts[t](s) for t, s in zip(tasks, obs["state"])])
            if cfg.demos.action_noise > 0:
                actions = np.clip(actions + rng.normal(0, cfg.demos.action_noise, actions.shape), -1, 1)
            prev = obs
            obs, reward, term, trunc, info = venv.step(actions)
            for b, task in enumerate(tasks):
                ep = episodes[b]
                for k in OBS_KEYS:
                    ep[k].append(prev[k][b])
                ep["action"].append(actions[b])
                ep["reward"].append(reward[b])
                ep["success"].append(info["success"][b])
                if not (term[b] or trunc[b]):
                    continue
                episodes[b] = _new_episode()
                if quota[task] == 0:
                    continue
                quota[task] -= 1
                success = bool(info["episode_success"][b])
                stats[task]["attempts"] += 1
                stats[task]["success"] += success
                stats[task]["steps"] += len(ep["action"])
                bar.update()
                if success or cfg.demos.keep == "all":
                    writer.add_episode(task, prev["instruction"][b], {k: np.stack(v) for k, v in ep.items()})
        bar.close()
        writer.close(
            {
                "backend": cfg.env.backend,
                "tasks": list(spec.tasks),
                "instructions": spec.instructions,
                "config": {"env": dataclasses.asdict(cfg.env), "demos": dataclasses.asdict(cfg.demos)},
                "config_hash": _fingerprint(cfg),
                "expert_stats": stats,
            }
        )
    except BaseException:
        writer.abort()
        raise
    finally:
        venv.close()
    console.print(expert_table(stats))
    console.print(f"wrote {len(writer.episodes)} episodes to {root}")
    return root


def import_demos(cfg: DemosCommand, root: Path, console: Console) -> Path:
    """Demonstrations from LIBERO's HDF5 files in ``demos.source``, for the tasks of suite ``env.task_set``."""
    from vlarl.data.libero_hdf5 import convert
    from vlarl.envs.libero import task_named

    files = sorted(Path(cfg.demos.source).glob("*.hdf5"))
    name_task = functools.partial(task_named, cfg.env.task_set)
    root, counts = convert(
        files, root, name_task, list(cfg.env.cameras), cfg.env.image_size, {"config_hash": _fingerprint(cfg)}
    )
    console.print(f"imported {sum(counts.values())} demonstrations of {len(counts)} tasks to {root}")
    return root


def _new_episode() -> dict[str, list]:
    return {k: [] for k in (*OBS_KEYS, "action", "reward", "success")}


def expert_table(stats: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="scripted-expert success per task")
    for col in ("task", "episodes", "success", "rate", "mean length"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, s in stats.items():
        n = max(s["attempts"], 1)
        table.add_row(task, str(s["attempts"]), str(s["success"]), f"{s['success'] / n:.0%}", f"{s['steps'] / n:.0f}")
    total = {k: sum(s[k] for s in stats.values()) for k in ("attempts", "success", "steps")}
    n = max(total["attempts"], 1)
    table.add_row(
        "[bold]all",
        str(total["attempts"]),
        str(total["success"]),
        f"{total['success'] / n:.0%}",
        f"{total['steps'] / n:.0f}",
    )
    return table
