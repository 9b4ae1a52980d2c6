"""Evaluation on each task's fixed initial states: success table, JSON report, mp4 videos.

Trials run in waves of ``num_envs``: each wave resets every env to one (task, initial state) job
and steps until all of them have finished their episode; steps of envs that already finished are
discarded. The same jobs (first ``trials_per_task`` fixed states of each task) are run for every
policy, so numbers are comparable across checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from vlarl import envs
from vlarl.policies.base import Sampling
from vlarl.utils.io import atomic_write_json


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 20) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)


def video_name(task: str, init_index: int) -> str:
    """``<task>_init<NNN>.mp4``, with characters other systems refuse in file names (LIBERO's ``:``) as ``-``."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '-', task)}_init{init_index:03d}.mp4"


class VideoReplay:
    """Re-renders an evaluation episode at ``video_size`` px by replaying its actions in a one-env copy.

    MetaWorld is deterministic given the initial state and the actions, so the replay is the same episode
    seen through the same camera at a viewable size; its frames go beside the policy's own input, enlarged.
    """

    def __init__(self, env_cfg: Any, video_size: int):
        self.venv = envs.make(dataclasses.replace(env_cfg, num_envs=1, num_workers=0, image_size=video_size))
        self.size = video_size

    def frames(self, task: str, init_index: int, actions: list[np.ndarray], small: list[np.ndarray]) -> list:
        """``[T+1]`` frames ``[size, 2 * size, 3]``: the replay at ``size`` px | the policy's input enlarged."""
        obs = self.venv.reset(options={"task": [task], "init_state": [init_index]})
        big = [obs["image"][0, 0]]
        for action in actions:
            obs, _, term, trunc, info = self.venv.step(action[None])
            big.append(info["final_image"][0, 0] if term[0] or trunc[0] else obs["image"][0, 0])
        scale = self.size // small[0].shape[0]
        return [np.concatenate([b, s.repeat(scale, 0).repeat(scale, 1)], axis=1) for b, s in zip(big, small)]

    def close(self) -> None:
        self.venv.close()


def evaluate_policy(
    policy: Any, env_cfg: Any, eval_cfg: Any, out_dir: str | Path, console: Console | None = None, seed: int = 0
) -> dict[str, Any]:
    """Run ``trials_per_task`` episodes per task; write ``report.json`` and videos under ``out_dir``."""
    console = console or Console()
    out_dir = Path(out_dir)
    if eval_cfg.video_size % env_cfg.image_size:
        raise ValueError(
            f"eval.video_size={eval_cfg.video_size} is not a multiple of env.image_size={env_cfg.image_size}"
        )
    if eval_cfg.trials_per_task > env_cfg.num_eval_init_states:
        raise ValueError(
            f"eval.trials_per_task={eval_cfg.trials_per_task} exceeds env.num_eval_init_states="
            f"{env_cfg.num_eval_init_states}"
        )
    venv = envs.make(env_cfg)
    spec = venv.spec
    jobs = [(task, i) for task in spec.tasks for i in range(eval_cfg.trials_per_task)]
    results: dict[str, list[dict]] = {t: [] for t in spec.tasks}
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    sampling = Sampling(temperature=eval_cfg.temperature, greedy=eval_cfg.greedy)
    policy.eval()
    bar = tqdm(total=len(jobs), desc="eval", unit="ep")
    replay = None
    try:
        for start in range(0, len(jobs), spec.num_envs):
            wave = jobs[start : start + spec.num_envs]
            padded = wave + [wave[-1]] * (spec.num_envs - len(wave))
            obs = venv.reset(seed=seed, options={"task": [t for t, _ in padded], "init_state": [i for _, i in padded]})
            record = [i < eval_cfg.videos_per_task and bool(obs["image"].shape[1]) for _, i in padded]
            frames: list[list[np.ndarray]] = [[obs["image"][b, 0]] if record[b] else [] for b in range(len(padded))]
            actions: list[list[np.ndarray]] = [[] for _ in padded]
            done = np.zeros(len(padded), bool)
            done[len(wave) :] = True
            for _ in range(math.ceil(env_cfg.max_episode_steps / policy.chunk_len)):
                act = policy.act(obs, sampling, generator)
                obs, _, term, trunc, info = venv.step_chunk(act.actions)  # a chunk's actions run open-loop
                for b in np.flatnonzero(~done):
                    ended = term[b].any() or trunc[b].any()
                    if record[b]:  # per env step: the policy's input stays until the chunk ends
                        ran = act.actions[b][info["valid"][b]]
                        after = info["final_image"][b, 0] if ended else obs["image"][b, 0]
                        frames[b].extend([frames[b][-1]] * (len(ran) - 1) + [after])
                        actions[b].extend(ran)
                    if ended:
                        done[b] = True
                        task, idx = padded[b]
                        results[task].append(
                            {
                                "init_state": idx,
                                "success": bool(info["episode_success"][b]),
                                "length": int(info["episode_length"][b]),
                            }
                        )
                        if record[b]:
                            if eval_cfg.video_size and replay is None:
                                replay = VideoReplay(env_cfg, eval_cfg.video_size)
                            clip = replay.frames(task, idx, actions[b], frames[b]) if replay else frames[b]
                            _write_video(out_dir / "videos" / video_name(task, idx), clip)
                        bar.update()
                if done.all():
                    break
    finally:
        bar.close()
        venv.close()
        if replay is not None:
            replay.close()
    report = summarize(results)
    report["config"] = {"env": dataclasses.asdict(env_cfg), "eval": dataclasses.asdict(eval_cfg)}
    atomic_write_json(out_dir / "report.json", report)
    console.print(success_table(report))
    if report["per_suite"]:
        console.print(suite_table(report))
    return report


def standard_error(rate: float, trials: int) -> float:
    """Binomial standard error of a success rate measured on ``trials`` episodes (0 when there are none)."""
    return float(np.sqrt(rate * (1.0 - rate) / trials)) if trials else 0.0


def summarize(results: dict[str, list[dict]]) -> dict[str, Any]:
    """Per-task success rate, its standard error and mean length; the task mean and its standard error."""
    per_task = {}
    for task, rs in results.items():
        rate = float(np.mean([r["success"] for r in rs])) if rs else 0.0
        per_task[task] = {
            "success_rate": rate,
            "stderr": standard_error(rate, len(rs)),
            "trials": len(rs),
            "mean_length": float(np.mean([r["length"] for r in rs])) if rs else 0.0,
            "episodes": rs,
        }
    mean, stderr = _task_mean(list(per_task.values()))
    suites: dict[str, list[dict]] = {}  # tasks named '<suite>:<index>' (LIBERO) are also summed up per suite
    for task, v in per_task.items():
        if ":" in task:
            suites.setdefault(task.rpartition(":")[0], []).append(v)
    per_suite = {
        name: dict(zip(("success_rate", "stderr"), _task_mean(vs)), tasks=len(vs)) for name, vs in suites.items()
    }
    return {"per_task": per_task, "per_suite": per_suite, "mean_success": mean, "mean_stderr": stderr}


def _task_mean(tasks: list[dict]) -> tuple[float, float]:
    """The mean of task success rates and its standard error (independent tasks: the variance is the sum of
    theirs over K^2)."""
    if not tasks:
        return 0.0, 0.0
    mean = float(np.mean([v["success_rate"] for v in tasks]))
    return mean, float(np.sqrt(sum(v["stderr"] ** 2 for v in tasks))) / len(tasks)


def suite_table(report: dict[str, Any]) -> Table:
    """One row, a column per suite and the average over suites, as the LIBERO papers lay it out."""
    table = Table(title="evaluation: success per suite (± standard error, points)")
    suites = report["per_suite"]
    for name in [*suites, "average"]:
        table.add_column(name, justify="right")
    average = _task_mean(list(suites.values()))
    table.add_row(*[percent(v["success_rate"], v["stderr"]) for v in suites.values()], f"[bold]{percent(*average)}")
    return table


def success_table(report: dict[str, Any], title: str = "evaluation: success per task") -> Table:
    table = Table(title=title)
    for col in ("task", "trials", "success", "mean length"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, r in report["per_task"].items():
        table.add_row(task, str(r["trials"]), percent(r["success_rate"], r["stderr"]), f"{r['mean_length']:.0f}")
    table.add_row("[bold]mean", "", f"[bold]{percent(report['mean_success'], report['mean_stderr'])}", "")
    return table


def percent(rate: float, stderr: float) -> str:
    """``'45% ± 5'``: a success rate and its standard error, in points."""
    return f"{rate:.0%} ± {100 * stderr:.0f}"


def before_after_table(before: dict, after: dict) -> Table:
    """Success per task before and after RL, each ± its standard error; the change ± the difference's."""
    table = Table(title="success per task: before and after RL (± standard error, points)")
    for col in ("task", "trials", "before", "after", "change"):
        table.add_column(col, justify="left" if col == "task" else "right")
    rows = [(task, before["per_task"][task], a) for task, a in after["per_task"].items()]
    rows.append(("[bold]mean", _mean_row(before), _mean_row(after)))
    for task, b, a in rows:
        change = a["success_rate"] - b["success_rate"]
        se = (a["stderr"] ** 2 + b["stderr"] ** 2) ** 0.5
        table.add_row(
            task,
            str(a.get("trials", "")),
            percent(b["success_rate"], b["stderr"]),
            percent(a["success_rate"], a["stderr"]),
            f"{100 * change:+.0f} ± {100 * se:.0f}",
        )
    return table


def _mean_row(report: dict) -> dict:
    return {"success_rate": report["mean_success"], "stderr": report["mean_stderr"]}
