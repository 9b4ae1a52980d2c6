"""Fixed-state proof: PPO and GRPO on the same (task, initial state) groups every iteration must reach >= 90%.

MetaWorld's transitions are deterministic given the actions, so on a fixed set of initial states RL is a
small, stationary problem: a working collector, advantage step and update drive rollout success on those
states up. A flat or falling curve here is a bug, not a limit. Steps:

1. the preset's (cached) SFT checkpoint;
2. screening: candidate (task, seed) states, round-robin over the tasks, each rolled out ``--group-size``
   times at the training temperature; states whose success lies in ``--band`` (default 20-80%: an
   all-same group teaches GRPO nothing) are kept until ``--groups`` are found;
3. per algorithm, ``trainer.fixed_states`` = those states, ``env.num_envs = groups x group_size`` (GRPO:
   one group per state; PPO: the same episodes, each on its own), up to ``--iterations`` iterations,
   stopping ``--patience`` iterations after rollout success first reaches ``--target``.

    python benchmarks/fixed_state.py [--preset metaworld_fewshot] [--algos grpo ppo] [--groups 8]
                                     [--group-size 8] [--iterations 50] [--set key=value ...]

Prints the screened states and a per-iteration table; writes ``benchmarks/results/fixed_state.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl import envs  # noqa: E402
from vlarl.config import load_config  # noqa: E402
from vlarl.policies import make_policy  # noqa: E402
from vlarl.rollout.collector import collect_episodes  # noqa: E402
from vlarl.sft import start_checkpoint  # noqa: E402
from vlarl.trainer import Trainer, rollout_sampling  # noqa: E402


def screen(cfg, checkpoint: Path, groups: int, group_size: int, band: tuple[float, float], console: Console):
    """``(kept, tried)``: states ``'task@seed'`` whose success over ``group_size`` rollouts lies in ``band``."""
    env_cfg = dataclasses.replace(cfg.env, num_envs=group_size * max(1, min(8, 64 // group_size)))
    venv = envs.make(env_cfg)
    spec = venv.spec
    policy = make_policy(dataclasses.replace(cfg.policy, checkpoint=str(checkpoint)), spec.action_dim, spec.proprio_dim)
    sampling = rollout_sampling(cfg)
    per_call = spec.num_envs // group_size
    rng = np.random.default_rng([cfg.run.seed, 777])  # training-style draws, disjoint from the eval states
    kept, tried, wanted_per_task = [], [], -(-groups // len(spec.tasks))
    count = dict.fromkeys(spec.tasks, 0)
    try:
        for call in range(100):
            open_tasks = [t for t in spec.tasks if count[t] < wanted_per_task] or list(spec.tasks)
            states = [
                (open_tasks[(call * per_call + g) % len(open_tasks)], int(rng.integers(2**31))) for g in range(per_call)
            ]
            env_task = [t for t, _ in states for _ in range(group_size)]
            seeds = [s for _, s in states for _ in range(group_size)]
            batch = collect_episodes(
                policy,
                venv,
                env_task,
                seeds,
                list(range(spec.num_envs)),
                seed=call,
                max_steps=env_cfg.max_episode_steps,
                sampling=sampling,
            )
            rates = batch.success.float().reshape(per_call, group_size).mean(1).tolist()
            for (task, seed), rate in zip(states, rates):
                tried.append({"state": f"{task}@{seed}", "success": rate})
                if band[0] <= rate <= band[1] and count[task] < wanted_per_task and len(kept) < groups:
                    kept.append(f"{task}@{seed}")
                    count[task] += 1
            console.print(f"screening call {call}: {len(kept)}/{groups} states kept of {len(tried)} tried")
            if len(kept) >= groups:
                break
    finally:
        venv.close()
    return kept, tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="metaworld_fewshot")
    parser.add_argument("--algos", nargs="+", default=["grpo", "ppo"], choices=["grpo", "ppo"])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--band", type=float, nargs=2, default=[0.2, 0.8])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--patience", type=int, default=3, help="iterations kept after the target is first reached")
    parser.add_argument("--states", nargs="*", default=None, help="skip screening: these 'task@seed' states")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop each algorithm after this long (0: none)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    console = Console(width=120)
    base = load_config("train", args.preset, overrides=args.overrides)
    checkpoint = start_checkpoint(base, console)
    tried = []
    states = args.states
    if not states:
        states, tried = screen(base, checkpoint, args.groups, args.group_size, tuple(args.band), console)
    console.print(f"fixed states: {states}")
    results = {}
    payload = {"preset": args.preset, "states": states, "screened": tried, "overrides": args.overrides}
    for algo in args.algos:
        cfg = load_config(
            "train",
            args.preset,
            overrides=[
                *args.overrides,
                f"algo.name={algo}",
                f"algo.group_size={args.group_size}",
                f"env.num_envs={len(states) * args.group_size}",
                "trainer.curriculum=none",
                "trainer.init=checkpoint",
                f"policy.checkpoint={checkpoint}",
                f"trainer.fixed_states=[{','.join(states)}]",
                "run.output_dir=runs/benchmarks",
                f"run.name=bench-fixed-state-{algo}",
            ],
        )
        run_dir = Path(cfg.run.output_dir) / cfg.run.name
        shutil.rmtree(run_dir, ignore_errors=True)
        if cfg.trainer.rounds != 1:
            raise SystemExit("fixed_state.py maps group g to state g: run it with trainer.rounds=1")
        trainer = RecordingTrainer(cfg, run_dir, console)
        curve, reached, start = [], None, time.perf_counter()
        try:
            for it in range(args.iterations):
                row = trainer.step()
                per_state = batch_state_success(row, states) | state_success(trainer, states)
                curve.append({"iteration": it, "success": row["rollout/success"], **per_state, **_keep(row)})
                console.print(
                    f"{algo} it {it}: rollout success {row['rollout/success']:.2f} "
                    f"(approx-KL {row.get('train/policy/approx_kl', float('nan')):.4f}, "
                    f"{sum(trainer.timing.values()):.0f} s); per state "
                    + " ".join(f"{per_state.get(f'success/{s}', float('nan')):.2f}" for s in states)
                )
                if reached is None and row["rollout/success"] >= args.target:
                    reached = it
                results[algo] = summarize(curve, reached, start)
                write_result("fixed_state", payload | {"target": args.target, "results": results}, args.out)
                if reached is not None and it - reached >= args.patience:
                    break
                if args.minutes and time.perf_counter() - start > 60 * args.minutes:
                    console.print(f"{algo}: stopped by --minutes {args.minutes} at iteration {it}")
                    break
        finally:
            trainer.venv.close()
            trainer.metrics.close()
    table = Table(title=f"fixed-state proof ({args.preset}; {len(states)} states x {args.group_size} episodes)")
    for col in ("algo", "start", "best", "final", f"first it >= {args.target:.0%}", "iterations", "minutes"):
        table.add_column(col, justify="left" if col == "algo" else "right")
    for algo, r in results.items():
        table.add_row(
            algo,
            f"{r['start_success']:.0%}",
            f"{r['best_success']:.0%}",
            f"{r['final_success']:.0%}",
            "not reached" if r["first_iteration_at_target"] is None else str(r["first_iteration_at_target"]),
            str(r["iterations"]),
            f"{r['minutes']:.1f}",
        )
    console.print(table)
    path = write_result("fixed_state", payload | {"target": args.target, "results": results}, args.out)
    console.print(f"wrote {path}")


def summarize(curve: list[dict], reached: int | None, start: float) -> dict:
    """One algorithm's result so far (written after every iteration: a stopped run keeps its curve)."""
    return {
        "start_success": curve[0]["success"],
        "best_success": max(c["success"] for c in curve),
        "final_success": curve[-1]["success"],
        "first_iteration_at_target": reached,
        "iterations": len(curve),
        "minutes": (time.perf_counter() - start) / 60,
        "curve": curve,
    }


class RecordingTrainer(Trainer):
    """A trainer that keeps its last collected batch (``self.batch``) for per-state figures."""

    def collect(self):
        self.batch = super().collect()
        return self.batch


def state_success(trainer, states: list[str]) -> dict:
    """``{'success/<task@seed>': rate}`` of the last collection round, each env's state from the trainer's schedule."""
    tasks, seeds = trainer.schedule(trainer.iteration, 0, np.random.default_rng(0))  # fixed states: rng unused
    names = np.array([f"{t}@{s}" for t, s in zip(tasks, seeds)])
    won = trainer.batch.success.float()
    return {f"success/{s}": won[torch.from_numpy(names == s)].mean().item() for s in states if (names == s).any()}


def batch_state_success(row: dict, states: list[str]) -> dict:
    """Per-task rollout success from the logged row (the states' tasks), for the JSON curve."""
    tasks = sorted({s.rpartition("@")[0] for s in states})
    return {f"success/{t}": row[f"rollout/kept_success/{t}"] for t in tasks if f"rollout/kept_success/{t}" in row}


def _keep(row: dict) -> dict:
    keys = ("policy/approx_kl", "policy/clip_frac", "policy/entropy", "value/explained_variance", "steps_taken")
    keys = tuple(f"train/{k}" for k in keys)
    return {k.removeprefix("train/"): row[k] for k in keys if k in row}


if __name__ == "__main__":
    main()
