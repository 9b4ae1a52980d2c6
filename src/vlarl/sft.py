"""``vlarl sft``: supervised warm-up of the policy on scripted-expert demonstrations.

Cross-entropy on the action tokens only (teacher forcing, full vocabulary as in OpenVLA), AdamW
with linear warm-up then cosine decay, gradient clipping, bf16 autocast where the device supports
it. Checkpoints (OpenVLA layout, LoRA merged) go to ``<run>/checkpoints/{step_N,latest}``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from tqdm import tqdm

from vlarl.config.loader import save_config
from vlarl.config.run import at_defaults, config_hash
from vlarl.config.schema import DemosCommand, SFTCommand, TrainCommand
from vlarl.data.dataset import DemoDataset, action_chunks
from vlarl.demos import collect_demos
from vlarl.learner import accumulate, autocast, clip_and_step
from vlarl.policies import ActionNormStats, make_policy
from vlarl.rollout.schema import gather_obs
from vlarl.utils.metrics import MetricLogger


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Multiplier of the peak lr at step s: linear warm-up to 1, then cosine down to ``min_ratio``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def save_checkpoint(policy: Any, cfg: Any, path: Path) -> None:
    """The policy in its family's layout (LoRA merged), plus the run config that produced it."""
    policy.save(path)
    save_config(cfg, path / "run_config.yaml")


def sft_loss(policy: Any, frames: dict[str, Any], targets: torch.Tensor, idx: np.ndarray, cfg: SFTCommand):
    """The policy's supervised loss on demo frames ``idx`` (targets ``[N, K, A]``) and its metrics."""
    with autocast(policy.device, cfg.policy.precision):
        return policy.sft_loss(policy.prepare(gather_obs(frames, idx)), targets[idx])


def run_sft(cfg: SFTCommand, run_dir: Path, console: Console | None = None) -> Path:
    """Train; returns the final checkpoint folder."""
    console = console or Console()
    root = (
        Path(cfg.sft.dataset)
        if cfg.sft.dataset
        else collect_demos(DemosCommand(run=cfg.run, env=cfg.env, demos=cfg.demos), console)
    )
    frames = DemoDataset(root).frames()
    n = len(frames["action"])
    torch.manual_seed(cfg.run.seed)
    policy = make_policy(
        cfg.policy,
        frames["action"].shape[1],
        frames["proprio"].shape[1],
        ActionNormStats.from_actions(frames["action"]),
        sorted(set(frames["instruction"])),
    )
    targets = policy.encode_actions(action_chunks(frames["action"], frames["episode_index"], policy.chunk_len))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.sft.lr, weight_decay=cfg.sft.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.sft.warmup_steps, cfg.sft.steps, cfg.sft.min_lr_ratio)
    )
    console.print(f"SFT on {n} frames from {root}: {sum(p.numel() for p in params):,} trainable parameters")
    logger = MetricLogger(run_dir, cfg.run.wandb_project, cfg)
    rng = np.random.default_rng(cfg.run.seed)
    micro = max(1, cfg.sft.batch_size // cfg.sft.grad_accum)
    ckpt_dir = run_dir / "checkpoints"
    policy.train()
    bar = tqdm(range(cfg.sft.steps), desc="sft", unit="step")
    for step in bar:
        idx = [rng.integers(0, n, micro) for _ in range(cfg.sft.grad_accum)]
        metrics = accumulate((1 / len(idx), lambda i=i: sft_loss(policy, frames, targets, i, cfg)) for i in idx)
        metrics["grad_norm"] = clip_and_step(optimizer, cfg.sft.grad_clip, schedule)
        if step % cfg.sft.log_every == 0 or step == cfg.sft.steps - 1:
            metrics["lr"] = schedule.get_last_lr()[0]
            logger.log({f"sft/{k}": v for k, v in metrics.items()}, step)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['token_accuracy']:.2f}")
        if (step + 1) % cfg.sft.save_every == 0 and step + 1 < cfg.sft.steps:
            save_checkpoint(policy, cfg, ckpt_dir / f"step_{step + 1:06d}")
    bar.close()
    logger.close()
    final = ckpt_dir / "latest"
    save_checkpoint(policy, cfg, final)
    shutil.copytree(final, ckpt_dir / f"step_{cfg.sft.steps:06d}", dirs_exist_ok=True)
    console.print(f"checkpoint: {final}")
    if cfg.sft.eval_at_end:
        from vlarl.evaluate import evaluate_policy

        evaluate_policy(policy, cfg.env, cfg.eval, run_dir / "eval", console, seed=cfg.run.seed)
    return final


def sft_cache_dir(cfg: TrainCommand) -> Path:
    """``data/sft/<hash>``: the hash of what SFT reads (the run's name and folder, rewards, rollout sampling and
    other ``rl_only`` and ``eval_only`` options left out; an RL run's SFT never evaluates at its end)."""
    sft = dataclasses.replace(cfg.sft, eval_at_end=False)
    seed = {"seed": cfg.run.seed}
    env, policy = (at_defaults(s, "rl_only", "eval_only") for s in (cfg.env, cfg.policy))
    sections = (env, cfg.demos, policy, sft, seed)
    return Path("data") / "sft" / config_hash(*sections)


def sft_checkpoint(cfg: TrainCommand, console: Console) -> Path:
    """The SFT checkpoint this run starts from: cached under data/sft/<hash of its config>."""
    sft_cfg = SFTCommand(
        run=cfg.run,
        env=cfg.env,
        demos=cfg.demos,
        policy=cfg.policy,
        sft=dataclasses.replace(cfg.sft, eval_at_end=False),
        eval=cfg.eval,
    )
    root = sft_cache_dir(cfg)  # the same folder for runs that differ in RL-side options only
    final = root / "checkpoints" / "latest"
    if (final / "config.json").is_file():
        console.print(f"[green]SFT cached[/] at {final}")
        return final
    return run_sft(sft_cfg, root, console)


def start_checkpoint(cfg: TrainCommand, console: Console) -> Path:
    """The policy RL starts from: the (cached) SFT checkpoint, or ``policy.checkpoint``."""
    if cfg.trainer.init == "sft":
        return sft_checkpoint(cfg, console)
    if not cfg.policy.checkpoint:
        raise ValueError("trainer.init=checkpoint needs policy.checkpoint=<folder>")
    return Path(cfg.policy.checkpoint)
