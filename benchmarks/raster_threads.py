"""Software-rendering threads: MetaWorld env steps/s with llvmpipe's default raster threads vs the thread plan's.

Each env process is a fresh Python process holding one MetaWorld env (MT10's first task, random actions, the
``corner`` camera at ``--size`` px) that renders in-process, as an env worker does; ``--procs`` of them run side
by side (on a 2-core machine, 2 are the env workers of a run). Their thread variables are the env-worker plan's
(``vlarl.utils.threads.thread_env(1)``), with ``LP_NUM_THREADS`` either left unset (``llvmpipe default``: one
raster thread per core) or the plan's (``plan``: 0, drawing in the process's own thread). Each configuration
(setting x meshes x processes) runs ``--repeats`` times, round-robin; the table gives the median total steps/s,
as a multiple of the default setting's in the same configuration and of full meshes at the default (before
issue 13). Prints a table and writes JSON (default ``benchmarks/results/raster_threads.json``).

    python benchmarks/raster_threads.py [--procs 1 2] [--steps 150] [--repeats 2] [--size 64] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl.utils.threads import THREAD_VARS, thread_env  # noqa: E402

SETTINGS = ("llvmpipe default", "plan")
MESHES = ("full", "simplified")
WARMUP = 10


def _child(meshes: str, size: int, steps: int) -> None:
    from env_throughput import measure

    print(json.dumps(measure("metaworld", 0, 1, size, steps, WARMUP, meshes)), flush=True)


def _env(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS} | thread_env(1)
    if setting == "llvmpipe default":
        del env["LP_NUM_THREADS"]
    return env


def run(setting: str, meshes: str, procs: int, size: int, steps: int) -> float:
    """Total steps/s of ``procs`` env processes started together."""
    cmd = [sys.executable, __file__, "--child", meshes, "--size", str(size), "--steps", str(steps)]
    children = [subprocess.Popen(cmd, env=_env(setting), stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    rates = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"env process failed ({setting}, {meshes}): exit {child.returncode}")
        rates.append(json.loads(out.strip().splitlines()[-1])["steps_per_s"])
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="env processes side by side")
    parser.add_argument("--steps", type=int, default=150, help="timed env steps per process")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the table gives medians")
    parser.add_argument("--size", type=int, default=64, help="image size (px)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/raster_threads.json)")
    parser.add_argument("--child", choices=MESHES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.size, args.steps)
    configs = [(s, m, p) for p in args.procs for m in MESHES for s in SETTINGS]
    runs: dict[tuple, list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for config in configs:
            runs[config].append(run(*config, args.size, args.steps))
    median = {c: statistics.median(r) for c, r in runs.items()}
    table = Table(title=f"MetaWorld env steps/s, {args.size} px, llvmpipe raster threads")
    for col in ("env procs", "meshes", "LP_NUM_THREADS", "steps/s", "x default", "x full, default"):
        table.add_column(col, justify="right")
    rows = []
    for setting, meshes, procs in configs:
        rate = median[(setting, meshes, procs)]
        row = {
            "procs": procs,
            "meshes": meshes,
            "setting": setting,
            "steps_per_s": round(rate, 1),
            "runs": [round(r, 1) for r in runs[(setting, meshes, procs)]],
            "x_default": round(rate / median[("llvmpipe default", meshes, procs)], 2),
            "x_full_default": round(rate / median[("llvmpipe default", "full", procs)], 2),
        }
        rows.append(row)
        lp = "unset" if setting == "llvmpipe default" else thread_env(1)["LP_NUM_THREADS"]
        cells = (procs, meshes, lp, row["steps_per_s"], row["x_default"], row["x_full_default"])
        table.add_row(*map(str, cells))
    Console().print(table)
    args_out = {k: v for k, v in vars(args).items() if k not in ("out", "child")}
    print(f"wrote {write_result('raster_threads', {'args': args_out, 'rows': rows}, args.out)}")


if __name__ == "__main__":
    main()
