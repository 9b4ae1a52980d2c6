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
