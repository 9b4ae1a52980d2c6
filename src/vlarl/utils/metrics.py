"""Metric sink of a run: TensorBoard under ``<run>/tb`` always, Weights & Biases when asked.

W&B is optional (``pip install 'vlarl[wandb]'``): set ``run.wandb_project``; on machines without
internet set ``WANDB_MODE=offline`` and ``wandb sync`` the run folder later. The W&B run id is the
run folder's name, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


class MetricLogger:
    """``log({"train/loss": 0.12, ...}, step)``: scalars keyed by ``namespace/name``."""

    def __init__(self, run_dir: Path, wandb_project: str = "", config: Any = None):
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        self.tb = SummaryWriter(str(run_dir / "tb"))
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError(
                    f"run.wandb_project={wandb_project!r} needs wandb: pip install 'vlarl[wandb]' "
                    "(or leave run.wandb_project empty for TensorBoard only)"
                ) from e
            self.wandb = wandb.init(
                project=wandb_project,
                name=run_dir.name,
                id=run_dir.name,
                resume="allow",
                dir=str(run_dir),
                config=dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
            )

    def log(self, row: dict[str, float], step: int) -> None:
        for key, value in row.items():
            self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def rollout_metrics(batch: Any) -> dict[str, float]:
    """The logged figures of a rollout batch (``rollout/``, ``env/``): success of every collected episode and of
    those kept for training (overall and per task: does the shared policy trade one task for another?)."""
    episodes = max(batch.success.numel(), 1)
    row = {
        "rollout/success": batch.stats["success"],  # every collected episode, before dynamic sampling
        "rollout/episodes": batch.stats["episodes"],
        "rollout/kept_success": batch.success.float().mean().item(),
        "rollout/kept_episodes": batch.success.numel(),
        "rollout/episode_length": batch.length.float().mean().item(),
        "env/reward": batch.reward.sum().item() / episodes,  # 0 at the env steps not run
        "env/steps": int(batch.length.sum()),
        "env/decisions": int(batch.mask.sum()),  # policy calls per env: env steps / K with chunks
    }
    for task in sorted(set(batch.task)):
        won = [ok for t, ok in zip(batch.task, batch.success.tolist()) if t == task]
        row[f"rollout/kept_success/{task}"] = sum(won) / len(won)
    return row


def perf_metrics(timing: dict[str, float], env_steps: int, epochs: int, rss: dict[str, Any]) -> dict[str, float]:
    """``timing/<stage>`` seconds, throughput (env steps/s of collection; learner samples/s over the epochs) and
    resident memory (MB) of the driver and the largest env worker."""
    row = {f"timing/{k}": v for k, v in timing.items()}
    row["perf/env_steps_per_s"] = env_steps / max(timing.get("collect", 1e-9), 1e-9)
    row["perf/samples_per_s"] = env_steps * epochs / max(timing.get("update", 1e-9), 1e-9)
    row["perf/rss_driver_mb"] = rss["driver"]
    if rss["workers"]:
        row["perf/rss_env_worker_max_mb"] = max(rss["workers"])
    return row
