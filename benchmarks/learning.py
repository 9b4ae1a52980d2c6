"""Learning benchmark: SFT -> PPO and SFT -> GRPO with the tiny policy on a fixed MetaWorld task set.

Both algorithms start from the same (cached) SFT checkpoint, see the same fixed evaluation initial
states (never used for training), and get the same RL wall-clock budget. Reports per-task and mean
success before/after RL, the gap to 100% closed, env steps and wall time (table + JSON).

    python benchmarks/learning.py [--preset metaworld_mt3_tiny] [--algos ppo grpo] [--budget-min 60] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl.config import load_config  # noqa: E402
from vlarl.trainer import run_train  # noqa: E402

ALGO_OVERRIDES = {
    "ppo": ["algo.name=ppo"],
    "grpo": ["algo.name=grpo", "algo.group_size=3", "algo.dynamic_sampling=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="metaworld_mt3_tiny")
    parser.add_argument("--algos", nargs="+", default=["ppo", "grpo"], choices=sorted(ALGO_OVERRIDES))
    parser.add_argument("--budget-min", type=float, default=60.0, help="RL wall-clock minutes per algorithm")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/learning.json)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    console = Console(width=120)
    results = {}
    for algo in args.algos:
        cfg = load_config(
            "train",
            args.preset,
            overrides=[
                "trainer.iterations=100000",
                f"trainer.time_budget_min={args.budget_min}",
                "trainer.save_every=20",
                *ALGO_OVERRIDES[algo],
                *args.overrides,
                f"run.name=bench-learning-{algo}",
                "run.output_dir=runs/benchmarks",
            ],
        )
        start = time.perf_counter()
        summary = run_train(cfg, Path(cfg.run.output_dir) / cfg.run.name, console)
        before, after = summary["before"], summary["after"]
        gap = 1.0 - before["mean_success"]
        results[algo] = {
            "before": {t: r["success_rate"] for t, r in before["per_task"].items()},
            "after": {t: r["success_rate"] for t, r in after["per_task"].items()},
            "mean_before": before["mean_success"],
            "mean_after": after["mean_success"],
            "gap_closed": (after["mean_success"] - before["mean_success"]) / gap if gap > 0 else 0.0,
            "iterations": summary["iterations"],
            "env_steps": summary["env_steps"],
            "rl_minutes": summary["rl_seconds"] / 60,
            "wall_minutes": (time.perf_counter() - start) / 60,
        }
    table = Table(title=f"learning benchmark ({args.preset}, {args.budget_min:g} min RL budget)")
    for col in ("algo", "task", "SFT", "after RL", "change"):
        table.add_column(col, justify="left" if col in ("algo", "task") else "right")
    for algo, r in results.items():
        for task in r["before"]:
            table.add_row(
                algo,
                task,
                f"{r['before'][task]:.0%}",
                f"{r['after'][task]:.0%}",
                f"{r['after'][task] - r['before'][task]:+.0%}",
            )
        table.add_row(
            f"[bold]{algo}",
            "[bold]mean",
            f"{r['mean_before']:.0%}",
            f"{r['mean_after']:.0%}",
            f"{r['mean_after'] - r['mean_before']:+.0%} (gap closed {r['gap_closed']:.0%}; "
            f"{r['iterations']} it, {r['env_steps']} steps, {r['rl_minutes']:.0f} min RL)",
        )
    console.print(table)
    path = write_result(
        "learning",
        {"preset": args.preset, "budget_min": args.budget_min, "overrides": args.overrides, "results": results},
        args.out,
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
