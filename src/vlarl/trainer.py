"""``vlarl train``: online RL of a VLA policy (PPO or GRPO), serial reference driver.

One iteration: collect (one episode per env) -> advantages -> update (epochs x minibatches) ->
log / checkpoint / eval. Every random draw of iteration i is seeded by (run.seed, i), so a run
resumed from the checkpoint of iteration i repeats the uninterrupted run exactly.
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
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vlarl import algorithms, envs
from vlarl.config.schema import TrainCommand
from vlarl.envs.curriculum import SuccessCurriculum
from vlarl.evaluate import before_after_table, evaluate_policy
from vlarl.learner import Learner
from vlarl.policies import make_policy
from vlarl.policies.base import Sampling
from vlarl.rollout.collector import Batch, collect_episodes, concat_batches
from vlarl.sft import save_checkpoint, start_checkpoint
from vlarl.utils.io import atomic_dir, atomic_write_json
from vlarl.utils.metrics import MetricLogger
from vlarl.utils.plot import line_panels
from vlarl.utils.threads import apply_thread_plan


def rollout_sampling(cfg: TrainCommand) -> Sampling:
    """How rollouts draw actions: ``trainer.temperature`` with the policy's top-k/top-p."""
    return Sampling(cfg.trainer.temperature, cfg.policy.top_k, cfg.policy.top_p)


def resolve_checkpoint(path: str | Path) -> Path:
    """A training checkpoint folder; ``checkpoints/latest`` points to one through its CHECKPOINT file."""
    path = Path(path)
    if (path / "CHECKPOINT").is_file():
        path = path.parent / (path / "CHECKPOINT").read_text().strip()
    return path


def parse_fixed_states(entries: list[str], tasks: tuple[str, ...]) -> list[tuple[str, int]]:
    """``['task@seed', ...]`` -> ``[(task, seed), ...]``; names the bad entry and the env's tasks."""
    out = []
    for entry in entries:
        task, _, seed = entry.rpartition("@")
        if task not in tasks or not seed.lstrip("-").isdigit():
            raise ValueError(f"trainer.fixed_states entry {entry!r} is not 'task@seed' with a task of {list(tasks)}")
        out.append((task, int(seed)))
    return out


class Trainer:
    """Holds the policy, envs and optimizer; each stage is a method timed under its name."""

    def __init__(self, cfg: TrainCommand, run_dir: Path, console: Console | None = None):
        self.cfg, self.run_dir, self.console = cfg, Path(run_dir), console or Console()
        apply_thread_plan("policy", cfg)  # the CLI did it before torch loaded; this covers library callers
        algo = cfg.algo
        self.advantage = algo.advantage or ("gae" if algo.name == "ppo" else "grpo")
        self.group_size = algo.group_size if algo.name == "grpo" else 1  # ppo: every episode on its own
        start = start_checkpoint(cfg, self.console)
        self.venv = envs.make(cfg.env)
        spec = self.venv.spec
        self.fixed_states = parse_fixed_states(cfg.trainer.fixed_states, spec.tasks)
        if self.fixed_states and cfg.trainer.curriculum != "none":
            raise ValueError("trainer.fixed_states picks every group's task and state: use trainer.curriculum=none")
        self.curriculum = None
        if cfg.trainer.curriculum == "success":
            t = cfg.trainer
            self.curriculum = SuccessCurriculum(spec.tasks, t.curriculum_window, self.group_size, t.curriculum_floor)
        self.policy = make_policy(
            dataclasses.replace(cfg.policy, checkpoint=str(start)), spec.action_dim, spec.proprio_dim
        )
        self.sampling = rollout_sampling(cfg)
        if algo.freeze_vision:
            self.policy.freeze_vision()
        self.learner = Learner(self.policy, cfg, self.sampling.temperature, use_value=self.advantage == "gae")
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
        """``trainer.rounds`` x one episode per env; GRPO groups share task and initial state.

        Tasks go in turn, or by the success curriculum, which sees every collected episode. Dynamic sampling
        collects up to ``ds_max_rounds`` times as many rounds until enough groups are kept.
        """
        cfg, spec = self.cfg, self.venv.spec
        b, tasks = spec.num_envs, spec.tasks
        n = self.group_size
        dynamic = cfg.algo.name == "grpo" and cfg.algo.dynamic_sampling  # ppo's "groups" are single episodes
        target = cfg.trainer.rounds * b
        kept, collected = [], []
        batch = None
        for r in range(cfg.trainer.rounds * (cfg.algo.ds_max_rounds if dynamic else 1)):
            rng = np.random.default_rng(self._seed(1, r))
            groups = b // n
            group_seed = rng.integers(2**31, size=groups)
            if self.fixed_states:
                fixed = [self.fixed_states[(r * groups + g) % len(self.fixed_states)] for g in range(groups)]
                group_task, group_seed = [t for t, _ in fixed], [s for _, s in fixed]
            elif self.curriculum is not None:
                group_task = self.curriculum.sample(groups, rng)
            else:
                offset = self.iteration * groups + r
                group_task = [tasks[(offset + g) % len(tasks)] if n > 1 else spec.env_tasks[g] for g in range(groups)]
            env_task = [group_task[i // n] for i in range(b)]
            batch = collect_episodes(
                self.policy,
                self.venv,
                env_task,
                [int(group_seed[i // n]) for i in range(b)],
                [r * b + i // n for i in range(b)],
                seed=self._seed(2, r),
                max_steps=cfg.env.max_episode_steps,
                sampling=self.sampling,
            )
            if self.curriculum is not None:
                self.curriculum.update(env_task, batch.success.tolist())
            if dynamic:
                rate = batch.success.float().reshape(groups, n).mean(1)
                ok = ((rate >= cfg.algo.ds_low) & (rate <= cfg.algo.ds_high)).repeat_interleave(n)
                kept.append(batch.select(ok.nonzero().squeeze(1).tolist()))
            else:
                kept.append(batch)
            collected.append(batch.success)
            if sum(k.success.numel() for k in kept) >= target:
                break
        if any(k.success.numel() for k in kept):
            batch = concat_batches(kept)  # else every group was filtered out: train on the last round
        every = torch.cat(collected).float()  # before dynamic sampling drops groups
        batch.stats = {"success": every.mean().item(), "episodes": every.numel()}
        return batch

    def advantages(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages and returns ``[T, B]`` (zero where ``mask`` is false)."""
        algo = self.cfg.algo
        if self.advantage == "gae":
            adv, ret = algorithms.gae(
                batch.reward, batch.value, batch.next_value, batch.terminated, batch.truncated, algo.gamma, algo.lam
            )
            if algo.norm_adv:
                adv = algorithms.normalize(adv, batch.mask)
        elif self.advantage == "reinforce_pp":  # per-step return-to-go, whitened over the batch: no critic
            adv = algorithms.reinforce_pp(batch.reward, batch.terminated, batch.truncated, algo.gamma, mask=batch.mask)
            ret = batch.value
        else:
            if algo.score == "success":
                score = batch.success.float()
            elif algo.score == "return":  # discounted return: under sparse reward, an earlier success scores more
                discount = algo.gamma ** torch.arange(batch.reward.shape[0], dtype=torch.float32).unsqueeze(1)
                score = (batch.reward * batch.mask * discount).sum(0)
            else:  # the episode's best step reward: under shaped rewards, how close it came
                score = batch.reward.masked_fill(~batch.mask, -torch.inf).amax(0)
            extra = {"normalize_std": algo.group_std} if self.advantage == "grpo" else {}
            episode = algorithms.get_advantage(self.advantage)(score, batch.group_id, **extra)
            adv = episode.unsqueeze(0).expand_as(batch.value)
            ret = batch.value
        if algo.step_weight == "episode":  # failures run longer: under step weighting they outweigh successes
            length = batch.length.clamp(min=1).float()
            adv = adv * (length.mean() / length)
        if algo.neg_adv_weight != 1.0:
            adv = torch.where(adv < 0, adv * algo.neg_adv_weight, adv)
        return torch.where(batch.mask, adv, 0.0), torch.where(batch.mask, ret, 0.0)

    def update(self, batch: Batch, adv: torch.Tensor, ret: torch.Tensor) -> dict[str, float]:
        """The learner's PPO epochs on this iteration's batch (critic warm-up in the first iterations)."""
        warmup = self.learner.use_value and self.iteration < self.cfg.algo.critic_warmup
        return self.learner.update(batch, adv, ret, np.random.default_rng(self._seed(3)), warmup)

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self) -> Path:
        """``checkpoints/iter_N`` (and ``latest``): the exported policy (every weight, once), the optimizer, lr
        schedule, RNG and progress; with LoRA also the trained adapters and heads (the export merges adapters)."""
        path = self.run_dir / "checkpoints" / f"iter_{self.iteration:06d}"
        with atomic_dir(path) as tmp:
            save_checkpoint(self.policy, self.cfg, tmp / "policy")
            if self.cfg.policy.lora_rank > 0:  # the export merges the adapters: keep them (and the heads) as trained
                trainable = {k: v for k, v in self.policy.named_parameters() if v.requires_grad}
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in trainable.items()}, tmp / "adapters.safetensors"
                )
            self.learner.save(tmp)
            save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
            progress = {"iteration": self.iteration, "seed": self.cfg.run.seed}
            if self.curriculum is not None:
                progress["curriculum"] = self.curriculum.state_dict()
            atomic_write_json(tmp / "trainer.json", progress)
        latest = self.run_dir / "checkpoints" / "latest"
        with atomic_dir(latest) as tmp:
            (tmp / "CHECKPOINT").write_text(path.name + "\n")
        return path

    def load(self, path: str | Path) -> None:
        path = resolve_checkpoint(path)
        if not (path / "trainer.json").is_file():
            raise FileNotFoundError(f"{path} is not a vlarl training checkpoint (no trainer.json)")
        if self.cfg.policy.lora_rank > 0:  # base weights as at the start (frozen), adapters and heads as trained
            trained = load_file(path / "adapters.safetensors")
            missing = {k for k, v in self.policy.named_parameters() if v.requires_grad} - set(trained)
            if missing:
                raise ValueError(f"{path}/adapters.safetensors lacks trainable tensors: {sorted(missing)[:5]}")
            self.policy.load_state_dict(trained, strict=False)
        else:  # full fine-tuning: the exported policy holds every weight, bit-exact (fp32 safetensors)
            exported = make_policy(
                dataclasses.replace(self.cfg.policy, checkpoint=str(path / "policy")), self.policy.action_dim
            )
            self.policy.load_state_dict(exported.state_dict())
        self.learner.load(path)
        torch.set_rng_state(load_file(path / "rng.safetensors")["torch_rng"])
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
        steps = batch.num_steps
        row = {f"train/{k}": v for k, v in metrics.items()}
        row |= {
            "rollout/success": batch.stats["success"],  # every collected episode
            "rollout/episodes": batch.stats["episodes"],
            "rollout/kept_success": batch.success.float().mean().item(),  # those trained on
            "rollout/kept_episodes": batch.success.numel(),
            "rollout/episode_length": batch.length.float().mean().item(),
            "env/reward": (batch.reward * batch.mask).sum().item() / max(batch.success.numel(), 1),
            "env/steps": steps,
        }
        for task in sorted(set(batch.task)):  # per task: does the shared policy trade one task for another?
            won = [ok for t, ok in zip(batch.task, batch.success.tolist()) if t == task]
            row[f"rollout/kept_success/{task}"] = sum(won) / len(won)
        row |= {f"timing/{k}": v for k, v in self.timing.items()}
        if self.curriculum is not None:
            for task, rate, weight in zip(self.curriculum.tasks, self.curriculum.rates(), self.curriculum.weights()):
                row[f"rollout/task_success/{task}"] = float(rate)
                row[f"rollout/task_weight/{task}"] = float(weight)
        rss = self.venv.rss_mb()
        row["perf/rss_driver_mb"] = rss["driver"]
        if rss["workers"]:
            row["perf/rss_env_worker_max_mb"] = max(rss["workers"])
        row["perf/env_steps_per_s"] = steps / max(self.timing.get("collect", 1e-9), 1e-9)
        row["perf/samples_per_s"] = steps * self.cfg.algo.epochs / max(self.timing.get("update", 1e-9), 1e-9)
        self.metrics.log(row, self.iteration)
        return row

    def plot_curve(self, history: list[dict[str, float]]) -> Path:
        """``learning_curve.png``: rollout and eval success, and return per episode, against the iteration."""
        its = list(range(self.iteration - len(history), self.iteration + 1))
        rollout = [r["rollout/success"] for r in history] + [float("nan")]
        evals = [self.eval_curve.get(i, float("nan")) for i in its]
        ret = [r["env/reward"] for r in history] + [float("nan")]
        panels = {"success": {"rollouts": rollout, "eval": evals}, "return per episode": {"rollouts": ret}}
        return line_panels(self.run_dir / "learning_curve.png", its, panels, "iteration")

    def step(self) -> dict[str, float]:
        """One RL iteration: collect -> advantages -> update, each timed; logs and returns the iteration's row."""
        self.timing = {}
        with self.timed("collect"):
            batch = self.collect()
        with self.timed("advantages"):
            adv, ret = self.advantages(batch)
        with self.timed("update"):
            metrics = self.update(batch, adv, ret)
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
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        if history:
            self.plot_curve(history)
        if before is not None:
            self.console.print(before_after_table(before, after))
        self.metrics.close()
        self.venv.close()
        return summary


def run_train(cfg: TrainCommand, run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    trainer = Trainer(cfg, run_dir, console)
    if cfg.trainer.resume:
        resume = run_dir / "checkpoints" / "latest" if cfg.trainer.resume == "auto" else Path(cfg.trainer.resume)
        if resume.exists():
            trainer.load(resume)
    return trainer.train()
