"""``vlarl train``: online RL of a VLA policy (PPO or GRPO), serial reference driver.

One iteration runs the stages collect (one episode per env) -> score -> advantages -> update (the
learner's epochs) -> sync_weights, then log / checkpoint / eval; a placement changes who runs a stage,
not the loop: a ``placement.mode`` other than serial collects with Ray env and rollout workers
(``vlarl.distributed``), with ``collect_episodes``'s signature and result. Every random draw of iteration i is
seeded by (run.seed, i), so a run resumed from the checkpoint of iteration i repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from tqdm import tqdm

from vlarl import envs
from vlarl.algorithms.estimate import advantages
from vlarl.config.loader import save_config
from vlarl.config.schema import TrainCommand
from vlarl.distributed.learner_group import LearnerGroup
from vlarl.envs.curriculum import GroupSchedule, SuccessCurriculum, parse_fixed_states
from vlarl.evaluate import before_after_table, evaluate_policy
from vlarl.learner import Learner
from vlarl.policies import make_policy
from vlarl.policies.base import Sampling
from vlarl.rollout.collector import collect_episodes
from vlarl.rollout.schema import Batch, concat_batches
from vlarl.sft import start_checkpoint
from vlarl.utils.io import atomic_dir, atomic_write_json, point_to, resolve_checkpoint
from vlarl.utils.metrics import MetricLogger, perf_metrics, rollout_metrics
from vlarl.utils.plot import learning_curve
from vlarl.utils.threads import apply_thread_plan


def rollout_sampling(cfg: TrainCommand) -> Sampling:
    """How rollouts draw actions: ``trainer.temperature`` with the policy's top-k/top-p."""
    return Sampling(cfg.trainer.temperature, cfg.policy.top_k, cfg.policy.top_p)


class Trainer:
    """Holds the policy, envs and learner; each stage of an iteration is a method timed under its name."""

    def __init__(self, cfg: TrainCommand, run_dir: Path, console: Console | None = None):
        self.cfg, self.run_dir, self.console = cfg, Path(run_dir), console or Console()
        apply_thread_plan("policy", cfg)  # the CLI did it before torch loaded; this covers library callers
        t = cfg.trainer
        self.group_size = cfg.algo.group_size if cfg.algo.name == "grpo" else 1  # ppo: every episode on its own
        policy_cfg = dataclasses.replace(cfg.policy, checkpoint=str(start_checkpoint(cfg, self.console)))
        self.placed = cfg.placement.mode != "serial"
        if self.placed:
            from vlarl.distributed import place

            self.venv, self.collector = place(cfg, policy_cfg)
        else:
            self.venv, self.collector = envs.make(cfg.env), collect_episodes
        spec = self.venv.spec
        self.curriculum = None
        if t.curriculum == "success":
            self.curriculum = SuccessCurriculum(spec.tasks, t.curriculum_window, self.group_size, t.curriculum_floor)
        fixed = parse_fixed_states(t.fixed_states, spec.tasks)
        self.schedule = GroupSchedule(spec.tasks, spec.env_tasks, self.group_size, fixed, self.curriculum)
        self.policy = make_policy(policy_cfg, spec.action_dim, spec.proprio_dim)
        self.sampling = rollout_sampling(cfg)
        if cfg.placement.learner_ranks > 1:  # FSDP2 or DDP ranks on Ray; the driver's policy is the rollout copy
            dims = (spec.action_dim, spec.proprio_dim)
            self.learner = LearnerGroup(self.policy, cfg, policy_cfg.checkpoint, dims, self.sampling.temperature)
        else:
            self.learner = Learner(self.policy, cfg, self.sampling.temperature)
        self.iteration = 0
        self.eval_curve: dict[int, float] = {}  # iteration -> eval mean success, for the learning-curve picture
        self.timing: dict[str, float] = {}
        self.metrics = MetricLogger(self.run_dir, cfg.run.wandb_project, cfg)

    @contextmanager
    def timed(self, name: str):
        start = time.perf_counter()
        yield
        self.timing[name] = time.perf_counter() - start

    def _seed(self, *parts: int) -> int:
        return int(np.random.default_rng([self.cfg.run.seed, self.iteration, *parts]).integers(2**31))

    # ---- stages -------------------------------------------------------------------------------
    def collect(self) -> Batch:
        """``trainer.rounds`` x one episode per env, each group's task and state from the schedule.

        Dynamic sampling (GRPO) collects up to ``ds_max_rounds`` times as many rounds until enough groups with
        a success rate in ``[ds_low, ds_high]`` are kept. ``batch.stats`` holds every collected episode's figures.
        """
        cfg, b, n = self.cfg, self.venv.spec.num_envs, self.group_size
        dynamic = cfg.algo.name == "grpo" and cfg.algo.dynamic_sampling  # ppo's "groups" are single episodes
        kept, collected = [], []
        for r in range(cfg.trainer.rounds * (cfg.algo.ds_max_rounds if dynamic else 1)):
            tasks, seeds = self.schedule(self.iteration, r, np.random.default_rng(self._seed(1, r)))
            batch = self.collector(
                self.policy,
                self.venv,
                tasks,
                seeds,
                [r * b + i // n for i in range(b)],
                seed=self._seed(2, r),
                max_steps=cfg.env.max_episode_steps,
                sampling=self.sampling,
                policy_version=self.iteration,
            )
            if self.curriculum is not None:
                self.curriculum.update(tasks, batch.success.tolist())
            kept.append(batch.groups_within(n, cfg.algo.ds_low, cfg.algo.ds_high) if dynamic else batch)
            collected.append(batch.success)
            if sum(k.success.numel() for k in kept) >= cfg.trainer.rounds * b:
                break
        if any(k.success.numel() for k in kept):
            batch = concat_batches(kept)  # else every group was filtered out: train on the last round
        every = torch.cat(collected).float()  # before dynamic sampling drops groups
        batch.stats = {"success": every.mean().item(), "episodes": every.numel()}
        return batch

    def score(self, batch: Batch) -> Batch:
        """The rewards the update learns from: the env's (sparse or shaped by ``env.reward``); the slot where a
        reward model adds its dense reward."""
        return batch

    def advantages(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages and returns ``[T, B]`` by ``algo.advantage`` (zero where ``mask`` is false)."""
        return advantages(batch, self.cfg.algo)

    def update(self, batch: Batch, adv: torch.Tensor, ret: torch.Tensor) -> dict[str, float]:
        """The learner's PPO epochs on this iteration's batch (critic warm-up in the first iterations)."""
        warmup = self.learner.use_value and self.iteration < self.cfg.algo.critic_warmup
        return self.learner.update(batch, adv, ret, np.random.default_rng(self._seed(3)), warmup)

    def sync_weights(self) -> None:
        """Publish the learner's weights as the next iteration's version: a learner group's gathered weights into the
        driver's policy, then to a placement's rollout worker (serial rollouts use the driver's policy itself)."""
        self.learner.sync()
        if self.placed:
            self.collector.sync_weights(self.policy, self.iteration + 1)

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self) -> Path:
        """``checkpoints/iter_N`` (and ``latest``): the learner's train state, the run config beside the exported
        policy, and the progress (iteration, curriculum)."""
        path = self.run_dir / "checkpoints" / f"iter_{self.iteration:06d}"
        with atomic_dir(path) as tmp:
            self.learner.save(tmp)
            save_config(self.cfg, tmp / "policy" / "run_config.yaml")
            progress = {"iteration": self.iteration, "seed": self.cfg.run.seed}
            if self.curriculum is not None:
                progress["curriculum"] = self.curriculum.state_dict()
            atomic_write_json(tmp / "trainer.json", progress)
        point_to(self.run_dir / "checkpoints" / "latest", path)
        return path

    def load(self, path: str | Path) -> None:
        path = resolve_checkpoint(path)
        if not (path / "trainer.json").is_file():
            raise FileNotFoundError(f"{path} is not a vlarl training checkpoint (no trainer.json)")
        self.learner.load(path)
        progress = json.loads((path / "trainer.json").read_text())
        self.iteration = progress["iteration"]
        if self.curriculum is not None:
            self.curriculum.load_state_dict(progress.get("curriculum", {}))
        self.console.print(f"resumed from {path} at iteration {self.iteration}")

    # ---- the loop -----------------------------------------------------------------------------
    def evaluate(self, name: str) -> dict[str, Any]:
        with self.timed("eval"):
            report = evaluate_policy(
                self.policy, self.cfg.env, self.cfg.eval, self.run_dir / name, self.console, seed=self.cfg.run.seed
            )
        self.eval_curve[self.iteration] = report["mean_success"]
        row = {f"eval/success/{task}": r["success_rate"] for task, r in report["per_task"].items()}
        self.metrics.log({"eval/mean_success": report["mean_success"], **row}, self.iteration)
        return report

    def log(self, batch: Batch, metrics: dict[str, float]) -> dict[str, float]:
        row = {f"train/{k}": v for k, v in metrics.items()} | rollout_metrics(batch)
        row |= perf_metrics(self.timing, row["env/steps"], self.cfg.algo.epochs, self.venv.rss_mb())
        if self.curriculum is not None:
            row |= self.curriculum.metrics()
        self.metrics.log(row, self.iteration)
        return row

    def step(self) -> dict[str, float]:
        """One RL iteration: collect -> score -> advantages -> update -> sync_weights, each timed; logs and returns
        the iteration's row."""
        self.timing = {}
        with self.timed("collect"):
            batch = self.collect()
        with self.timed("score"):
            batch = self.score(batch)
        with self.timed("advantages"):
            adv, ret = self.advantages(batch)
        with self.timed("update"):
            metrics = self.update(batch, adv, ret)
        with self.timed("sync_weights"):
            self.sync_weights()
        row = self.log(batch, metrics)
        self.iteration += 1
        return row

    def train(self) -> dict[str, Any]:
        cfg = self.cfg.trainer
        before = self.evaluate("eval_before") if self.iteration == 0 else None
        history = []
        bar = tqdm(
            range(self.iteration, cfg.iterations), desc="rl", unit="it", initial=self.iteration, total=cfg.iterations
        )
        rl_seconds = 0.0
        for _ in bar:
            if cfg.time_budget_min and rl_seconds >= 60 * cfg.time_budget_min:
                self.console.print(f"time budget of {cfg.time_budget_min} min reached at iteration {self.iteration}")
                break
            row = self.step()
            rl_seconds += sum(self.timing.values())
            history.append(row)
            bar.set_postfix(success=f"{row['rollout/success']:.2f}", steps=row["env/steps"])
            if self.iteration % cfg.save_every == 0 or self.iteration == cfg.iterations:
                with self.timed("checkpoint"):
                    self.save()
            if cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.iteration < cfg.iterations:
                self.evaluate(f"eval_iter{self.iteration:04d}")
        if history and self.iteration % cfg.save_every and self.iteration != cfg.iterations:
            self.save()  # stopped by the time budget between checkpoints: keep the policy that is evaluated
        after = self.evaluate("eval_after")
        summary = {
            "before": before,
            "after": after,
            "history": history,
            "iterations": self.iteration,
            "rl_seconds": rl_seconds,
            "env_steps": sum(r["env/steps"] for r in history),
            "decisions": sum(r["env/decisions"] for r in history),
            "episodes": sum(r["rollout/episodes"] for r in history),
            "collect_seconds": sum(r["timing/collect"] for r in history),
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        if history:
            learning_curve(self.run_dir / "learning_curve.png", history, self.eval_curve, self.iteration)
        if before is not None:
            self.console.print(before_after_table(before, after))
        self.metrics.close()
        self.close()
        return summary

    def close(self) -> None:
        """Close the envs (and a placement's workers and Ray session) and the learner (a group's ranks)."""
        self.venv.close()
        if self.placed:
            self.collector.close()
        self.learner.close()


def run_train(cfg: TrainCommand, run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    trainer = Trainer(cfg, run_dir, console)
    if cfg.trainer.resume:
        resume = run_dir / "checkpoints" / "latest" if cfg.trainer.resume == "auto" else Path(cfg.trainer.resume)
        if resume.exists():
            trainer.load(resume)
    return trainer.train()
