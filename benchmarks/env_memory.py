"""Env-worker memory over many reset + step cycles: resident memory (RSS, MB) of the driver and of each
``SubprocVectorEnv`` worker over time.

Each cycle resets every env with a task and an initial-state seed, then takes ``--steps`` random steps
(episodes auto-reset). How tasks are given to the env slots (``--pattern``):

- ``random``: each slot a random task each cycle (as under the success curriculum);
- ``waves``: all slots one task, the next task each cycle (as evaluation does: a wave per task);
- ``fixed``: the same tasks every cycle, new initial states only.

Every ``--every`` seconds a row is printed: elapsed time, cycles, driver RSS, largest worker RSS.
Writes JSON (default ``benchmarks/results/env_memory.json``).

    python benchmarks/env_memory.py [--minutes 10] [--pattern random] [--envs 6] [--workers 1]
        [--tasks reach-v3 push-v3 ...] [--steps 30] [--image-size 64] [--every 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl import envs  # noqa: E402
from vlarl.config import load_config  # noqa: E402

PATTERNS = ("random", "waves", "fixed")
TASKS = ["reach-v3", "push-v3", "drawer-close-v3", "button-press-topdown-v3", "window-open-v3"]


def slot_tasks(pattern: str, cycle: int, tasks: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """The task of each of the ``n`` env slots in ``cycle``."""
    if pattern == "random":
        return [tasks[i] for i in rng.integers(len(tasks), size=n)]
    if pattern == "waves":
        return [tasks[cycle % len(tasks)]] * n
    return [tasks[b % len(tasks)] for b in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--pattern", choices=PATTERNS, default="random")
    parser.add_argument("--envs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--steps", type=int, default=30, help="random steps per cycle")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between rows")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/env_memory.json)")
    args = parser.parse_args()
    overrides = [
        "env.task_set=custom",
        f"env.tasks=[{','.join(args.tasks)}]",
        f"env.num_envs={args.envs}",
        f"env.num_workers={args.workers}",
        f"env.image_size={args.image_size}",
        "env.cameras=[corner]",
    ]
    venv = envs.make(load_config("demos", overrides=overrides).env)
    n, tasks = venv.spec.num_envs, venv.spec.tasks
    rng = np.random.default_rng(0)
    console = Console(width=120)
    samples, cycle, start, next_row = [], 0, time.perf_counter(), 0.0
    try:
        while True:
            task = slot_tasks(args.pattern, cycle, tasks, n, rng)
            venv.reset(options={"task": task, "init_seed": [int(s) for s in rng.integers(2**31, size=n)]})
            for _ in range(args.steps):
                venv.step(rng.uniform(-1, 1, (n, venv.spec.action_dim)))
            cycle += 1
            elapsed = time.perf_counter() - start
            done = elapsed >= 60 * args.minutes
            if elapsed >= next_row or done:
                rss = venv.rss_mb()
                row = {"seconds": elapsed, "cycles": cycle, "driver_mb": rss["driver"], "workers_mb": rss["workers"]}
                row["worker_max_mb"] = max(rss["workers"])
                samples.append(row)
                console.print(
                    f"{elapsed:7.0f} s  {cycle:5d} cycles  driver {row['driver_mb']:7.0f} MB  "
                    f"worker max {row['worker_max_mb']:7.0f} MB"
                )
                next_row += args.every
            if done:
                break
    finally:
        venv.close()
    first, last = samples[0], samples[-1]
    table = Table(title=f"env memory: {args.pattern}, {n} envs / {args.workers} worker(s) / {len(tasks)} tasks")
    for col in ("minutes", "cycles", "driver MB", "worker max MB"):
        table.add_column(col, justify="right")
    for s in samples:
        table.add_row(
            f"{s['seconds'] / 60:.1f}", str(s["cycles"]), f"{s['driver_mb']:.0f}", f"{s['worker_max_mb']:.0f}"
        )
    console.print(table)
    console.print(
        f"worker max RSS {first['worker_max_mb']:.0f} -> {last['worker_max_mb']:.0f} MB "
        f"(peak {max(s['worker_max_mb'] for s in samples):.0f}) over {last['cycles']} cycles"
    )
    payload = {"args": {k: v for k, v in vars(args).items() if k != "out"}, "samples": samples}
    console.print(f"wrote {write_result('env_memory', payload, args.out)}")


if __name__ == "__main__":
    main()
