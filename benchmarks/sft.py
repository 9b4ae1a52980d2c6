"""SFT benchmark: demos -> SFT -> eval with the tiny policy on a preset's task set (default: the
`make train` preset). Reports wall time of each stage, SFT samples/s, and success after SFT per task
(the base RL has to improve). Demos are cached between runs; SFT and eval always run.

    python benchmarks/sft.py [--preset metaworld_mt3_tiny] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl.config import load_config  # noqa: E402
from vlarl.config.schema import DemosCommand  # noqa: E402
from vlarl.demos import collect_demos  # noqa: E402
from vlarl.evaluate import evaluate_policy, success_table  # noqa: E402
from vlarl.sft import run_sft  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="metaworld_mt3_tiny")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/sft.json)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    console = Console(width=120)
    cfg = load_config(
        "sft",
        args.preset,
        overrides=[*args.overrides, "sft.eval_at_end=false", "run.name=bench-sft", "run.output_dir=runs/benchmarks"],
    )
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    t0 = time.perf_counter()
    collect_demos(DemosCommand(run=cfg.run, env=cfg.env, demos=cfg.demos), console)
    t1 = time.perf_counter()
    ckpt = run_sft(cfg, run_dir, console)
    t2 = time.perf_counter()
    from vlarl import envs
    from vlarl.policies import make_policy

    spec = envs.make_backend(cfg.env).spec(cfg.env.num_envs)
    policy = make_policy(
        dataclasses.replace(cfg.policy, checkpoint=str(ckpt), lora_rank=0), spec.action_dim, spec.proprio_dim
    )
    report = evaluate_policy(policy, cfg.env, cfg.eval, run_dir / "eval", console, seed=cfg.run.seed)
    t3 = time.perf_counter()
    samples = cfg.sft.steps * cfg.sft.batch_size
    timing = {"demos_s": t1 - t0, "sft_s": t2 - t1, "eval_s": t3 - t2, "sft_samples_per_s": samples / (t2 - t1)}
    table = Table(title=f"SFT benchmark ({args.preset})")
    for col in ("stage", "value"):
        table.add_column(col)
    for k, v in timing.items():
        table.add_row(k, f"{v:.1f}")
    table.add_row("mean success after SFT", f"{report['mean_success']:.0%}")
    console.print(table)
    console.print(success_table(report, "success after SFT"))
    per_task = {t: r["success_rate"] for t, r in report["per_task"].items()}
    path = write_result(
        "sft",
        {
            "preset": args.preset,
            "overrides": args.overrides,
            "timing": timing,
            "sft_steps": cfg.sft.steps,
            "batch_size": cfg.sft.batch_size,
            "mean_success": report["mean_success"],
            "per_task": per_task,
        },
        args.out,
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
