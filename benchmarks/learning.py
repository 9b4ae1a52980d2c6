"""Learning benchmark: SFT -> PPO and SFT -> GRPO with the tiny policy on a fixed MetaWorld task set.

Both algorithms start from the same (cached) SFT checkpoint, see the same fixed evaluation initial
states (never used for training), and get the same RL wall-clock budget. Reports per-task and mean
success before/after RL under the preset's eval protocol (``eval.greedy``/``eval.temperature``), the
gap to 100% closed, env steps (policy decisions; x ``env.action_repeat`` simulator steps) and wall
time (table + JSON). When that protocol samples, the SFT and the final policy are also evaluated
greedily (argmax decoding), reported beside it.

    python benchmarks/learning.py [--preset metaworld_mt3] [--algos grpo ppo] [--budget-min 60 | grpo=60 ppo=30]
                                  [--set key=value ...]

The preset holds the hyperparameters (a user gets the same ones); ``--algos`` only switches
``algo.name``, so GRPO's group size and dynamic sampling come from the preset too.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl import envs  # noqa: E402
from vlarl.config import load_config  # noqa: E402
from vlarl.evaluate import evaluate_policy, percent  # noqa: E402
from vlarl.policies import make_policy  # noqa: E402
from vlarl.sft import start_checkpoint  # noqa: E402
from vlarl.trainer import run_train  # noqa: E402
from vlarl.utils.io import resolve_checkpoint  # noqa: E402

ALGOS = ("grpo", "ppo")


def budgets(items: list[str], algos: list[str]) -> dict[str, float]:
    """``["60"]`` -> every algo 60 min; ``["grpo=60", "ppo=30"]`` -> per algo (each algo named once)."""
    if len(items) == 1 and "=" not in items[0]:
        return dict.fromkeys(algos, float(items[0]))
    named = {k: float(v) for k, v in (item.split("=", 1) for item in items)}
    if set(named) != set(algos):
        raise SystemExit(f"--budget-min names {sorted(named)}, but --algos is {algos}")
    return named


def rates(report: dict) -> dict[str, float]:
    """Per-task success, ``mean`` and ``mean_stderr`` of an evaluation report."""
    per_task = {t: r["success_rate"] for t, r in report["per_task"].items()}
    return per_task | {"mean": report["mean_success"], "mean_stderr": report["mean_stderr"]}


def greedy_success(cfg, checkpoint: Path, out_dir: Path, console: Console) -> dict[str, float]:
    """Per-task success (and ``mean``) of the checkpoint's policy with argmax decoding, on the same eval states."""
    spec = envs.make_backend(cfg.env).spec(cfg.env.num_envs)
    policy = make_policy(dataclasses.replace(cfg.policy, checkpoint=str(checkpoint)), spec.action_dim, spec.proprio_dim)
    eval_cfg = dataclasses.replace(cfg.eval, greedy=True, videos_per_task=0)
    return rates(evaluate_policy(policy, cfg.env, eval_cfg, out_dir, console, seed=cfg.run.seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="metaworld_mt3")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--budget-min", nargs="+", default=["60"], help="RL minutes: one number, or algo=minutes")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/learning.json)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    budget = budgets(args.budget_min, args.algos)
    console = Console(width=120)
    results = {}
    for algo in args.algos:
        cfg = load_config(
            "train",
            args.preset,
            overrides=[
                "trainer.iterations=100000",
                f"trainer.time_budget_min={budget[algo]}",
                f"algo.name={algo}",
                *args.overrides,
                f"run.name=bench-learning-{algo}",
                "run.output_dir=runs/benchmarks",
            ],
        )
        run_dir = Path(cfg.run.output_dir) / cfg.run.name
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no stale checkpoints or TensorBoard events
        start = time.perf_counter()
        summary = run_train(cfg, run_dir, console)
        before, after = summary["before"], summary["after"]
        gap = 1.0 - before["mean_success"]
        results[algo] = {
            "before": {t: r["success_rate"] for t, r in before["per_task"].items()},
            "after": {t: r["success_rate"] for t, r in after["per_task"].items()},
            "mean_before": before["mean_success"],
            "mean_after": after["mean_success"],
            "stderr_before": before["mean_stderr"],
            "stderr_after": after["mean_stderr"],
            "eval_episodes_per_task": cfg.eval.trials_per_task,
            "protocol": "greedy" if cfg.eval.greedy else f"sampled T={cfg.eval.temperature}",
            "gap_closed": (after["mean_success"] - before["mean_success"]) / gap if gap > 0 else 0.0,
            "iterations": summary["iterations"],
            "env_steps": summary["env_steps"],
            "sim_steps": summary["env_steps"] * cfg.env.action_repeat,
            "episodes": summary["episodes"],
            "decisions": summary["decisions"],
            "decisions_per_s": summary["decisions"] / max(summary["collect_seconds"], 1e-9),
            "env_steps_per_s": summary["env_steps"] / max(summary["collect_seconds"], 1e-9),
            "budget_min": budget[algo],
            "rl_minutes": summary["rl_seconds"] / 60,
            "wall_minutes": (time.perf_counter() - start) / 60,
        }
        if not cfg.eval.greedy:
            final = resolve_checkpoint(run_dir / "checkpoints" / "latest") / "policy"
            start = start_checkpoint(cfg, console)
            results[algo]["greedy_before"] = greedy_success(cfg, start, run_dir / "greedy_before", console)
            results[algo]["greedy_after"] = greedy_success(cfg, final, run_dir / "greedy_after", console)
    protocol = "greedy" if cfg.eval.greedy else f"sampled T={cfg.eval.temperature}"
    table = Table(title=f"learning benchmark ({args.preset}; RL budget per algo: {budget} min)")
    greedy_cols = ("SFT greedy", "after RL greedy") if not cfg.eval.greedy else ()
    for col in ("algo", "task", f"SFT {protocol}", f"after RL {protocol}", "change", *greedy_cols):
        table.add_column(col, justify="left" if col in ("algo", "task") else "right")
    for algo, r in results.items():
        greedy = lambda key, r=r: [f"{r[g][key]:.0%}" for g in ("greedy_before", "greedy_after") if g in r]
        for task in r["before"]:
            table.add_row(
                algo,
                task,
                f"{r['before'][task]:.0%}",
                f"{r['after'][task]:.0%}",
                f"{r['after'][task] - r['before'][task]:+.0%}",
                *greedy(task),
            )
        table.add_row(
            f"[bold]{algo}",
            "[bold]mean",
            percent(r["mean_before"], r["stderr_before"]),
            percent(r["mean_after"], r["stderr_after"]),
            f"{r['mean_after'] - r['mean_before']:+.0%} (gap closed {r['gap_closed']:.0%}; "
            f"{r['iterations']} it, {r['episodes']} episodes, {r['env_steps']} env steps = {r['sim_steps']} sim "
            f"steps in {r['decisions']} decisions ({r['decisions_per_s']:.1f}/s in collection), "
            f"{r['rl_minutes']:.0f} min RL)",
            *greedy("mean"),
        )
    console.print(table)
    path = write_result(
        "learning",
        {
            "preset": args.preset,
            "protocol": protocol,
            "budget_min": budget,
            "overrides": args.overrides,
            "results": results,
        },
        args.out,
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
