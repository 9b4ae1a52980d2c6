"""Thread plan benchmark: a small torch workload alone and beside one busy neighbour process, with and
without ``vlarl.utils.threads``'s plan.

Workload: forward + backward of a 2-layer 256x256 MLP (ReLU) on a [32, 256] batch, in a fresh process
whose thread variables are set before torch loads (as the CLI does), timed for ``--seconds`` after a
warm-up. Settings:

- ``default``: nothing set (torch's default: one thread per core, OpenMP's default wait policy);
- ``plan, 1 env worker``: the policy plan when the run has one env worker (cores - 1 threads, PASSIVE);
- ``plan, no env workers``: the policy plan when the neighbour is not one of the run's env workers
  (all cores, PASSIVE).

Neighbours, started with the env-worker plan (1 thread) before the workload and stopped after it:
``none``; ``busy`` (a pure-Python busy loop); ``metaworld`` (a MetaWorld env stepping with random actions
and rendering a 64 px camera, an env worker that never waits). "share" is steps/s as a fraction of the
same setting alone; "neighbour steps/s" is the neighbour's rate while the workload ran; "foreign cores"
is the CPU time used meanwhile by processes outside this benchmark (the machine is shared; the largest
of the repeats). Each setting runs ``--repeats`` times, round-robin; the table gives medians.
Prints a table and writes JSON (default ``benchmarks/results/threads.json``).

    python benchmarks/threads.py [--seconds 8] [--repeats 3] [--neighbours none busy metaworld] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl.utils.threads import THREAD_VARS, machine_cores, plan_threads, thread_env  # noqa: E402

NEIGHBOURS = ("none", "busy", "metaworld")
WARMUP_S = 1.0
TICK_S = 0.25


def _workload(seconds: float) -> None:
    """Child: time the MLP loop; print JSON (steps/s, threads, wall-clock window)."""
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(*[m for _ in range(2) for m in (torch.nn.Linear(256, 256), torch.nn.ReLU())])
    x = torch.randn(32, 256)

    def step() -> None:
        mlp.zero_grad(set_to_none=True)
        mlp(x).square().mean().backward()

    end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        step()
    steps, start, t0 = 0, time.time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - t0
    out = {"steps_per_s": steps / elapsed, "threads": torch.get_num_threads(), "window": [start, time.time()]}
    print(json.dumps(out), flush=True)


def _neighbour(kind: str) -> None:
    """Child: run ``kind`` until SIGTERM; print ``ready``, then ``<time> <steps so far>`` every tick."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if kind == "metaworld":
        import numpy as np

        from vlarl.config import load_config
        from vlarl.envs import make_backend

        cfg = load_config("demos", overrides=["env.task_set=MT1", "env.tasks=[reach-v3]", "env.image_size=64"]).env
        env = make_backend(cfg).make_env("reach-v3")
        rng = np.random.default_rng(0)
        env.reset(None, rng)

        def step() -> None:
            env.step(rng.uniform(-1, 1, 4))
            env.observe()
    else:

        def step() -> None:
            sum(i * i for i in range(2000))

    print("ready", flush=True)
    steps, next_tick = 0, time.time()
    while not stop:
        step()
        steps += 1
        if time.time() >= next_tick:
            print(f"{time.time()} {steps}", flush=True)
            next_tick += TICK_S
    print(f"{time.time()} {steps}", flush=True)


def _env(threads: int | None) -> dict[str, str]:
    """This process's environment without thread variables, plus the plan of ``threads`` (None: default)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    return env if threads is None else {**env, **thread_env(threads)}


def _busy_jiffies() -> int:
    """CPU time (jiffies) the whole machine spent busy since boot: all but idle and iowait."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _proc_jiffies(pid: int) -> int:
    """User + system CPU time (jiffies) of process ``pid``; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(stat[11]) + int(stat[12])


def _neighbour_rate(lines: list[str], window: list[float]) -> float | None:
    """Neighbour steps/s over ``window`` from its ``<time> <steps>`` ticks."""
    ticks = [tuple(map(float, line.split())) for line in lines if line and line != "ready"]
    inside = [(t, n) for t, n in ticks if window[0] <= t <= window[1]]
    if len(inside) < 2:
        return None
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def measure(setting: str, threads: int | None, neighbour: str, seconds: float) -> dict:
    """One run: start the neighbour (if any), run the workload beside it, stop the neighbour."""
    me = Path(__file__).resolve()
    proc = None
    if neighbour != "none":
        proc = subprocess.Popen(
            [sys.executable, str(me), "--neighbour-child", neighbour],
            env=_env(plan_threads("env_worker")),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready", f"neighbour {neighbour} did not start"
        time.sleep(0.5)
    busy0 = _busy_jiffies()
    ours0 = _proc_jiffies(proc.pid) if proc else 0
    start = time.time()
    child = subprocess.Popen(
        [sys.executable, str(me), "--workload-child", str(seconds)],
        env=_env(threads),
        stdout=subprocess.PIPE,
        text=True,
    )
    child_jiffies = 0
    while child.poll() is None:  # /proc/<pid>/stat vanishes once the child is reaped
        child_jiffies = _proc_jiffies(child.pid) or child_jiffies
        time.sleep(0.1)
    out = json.loads(child.stdout.read().strip().splitlines()[-1])
    elapsed = time.time() - start
    busy = _busy_jiffies() - busy0
    ours = child_jiffies + (_proc_jiffies(proc.pid) - ours0 if proc else 0)
    out["neighbour_steps_per_s"] = None
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        lines = proc.stdout.read().strip().splitlines()
        proc.wait(timeout=30)
        out["neighbour_steps_per_s"] = _neighbour_rate(lines, out["window"])
    hz = os.sysconf("SC_CLK_TCK")
    out["foreign_cores"] = max(0.0, (busy - ours) / hz / elapsed)
    return {"setting": setting, "neighbour": neighbour, "plan_threads": threads, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the table gives medians")
    parser.add_argument("--neighbours", nargs="+", choices=NEIGHBOURS, default=list(NEIGHBOURS))
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/threads.json)")
    parser.add_argument("--workload-child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--neighbour-child", choices=NEIGHBOURS[1:], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload_child is not None:
        return _workload(args.workload_child)
    if args.neighbour_child:
        return _neighbour(args.neighbour_child)
    settings = {
        "default": None,
        "plan, 1 env worker": plan_threads("policy", env_workers=1),
        "plan, no env workers": plan_threads("policy", env_workers=0),
    }
    console = Console(width=120)
    configs = [(n, st) for n in ["none", *(n for n in args.neighbours if n != "none")] for st in settings]
    runs: dict[tuple[str, str], list[dict]] = {c: [] for c in configs}
    for repeat in range(args.repeats):  # round-robin, so slow drifts of the machine spread over all settings
        for neighbour, setting in configs:
            runs[neighbour, setting].append(measure(setting, settings[setting], neighbour, args.seconds))
            r = runs[neighbour, setting][-1]
            console.print(f"{repeat} {neighbour:9s} {setting:20s} {r['steps_per_s']:6.0f} steps/s")
    rows = []
    for neighbour, setting in configs:
        done = runs[neighbour, setting]
        rates = [r["neighbour_steps_per_s"] for r in done if r["neighbour_steps_per_s"] is not None]
        rows.append(
            {
                "setting": setting,
                "neighbour": neighbour,
                "threads": done[0]["threads"],
                "steps_per_s": statistics.median(r["steps_per_s"] for r in done),
                "neighbour_steps_per_s": statistics.median(rates) if rates else None,
                "foreign_cores": max(r["foreign_cores"] for r in done),
                "runs": done,
            }
        )
    alone = {r["setting"]: r["steps_per_s"] for r in rows if r["neighbour"] == "none"}
    for r in rows:
        r["share_of_alone"] = r["steps_per_s"] / alone[r["setting"]]
        r["share_of_default_alone"] = r["steps_per_s"] / alone["default"]
    table = Table(title=f"256x256 MLP fwd+bwd, {machine_cores()} cores: steps/s alone and beside one neighbour")
    for col in ("neighbour", "setting", "threads", "steps/s", "share", "of default alone", "neighbour/s", "foreign"):
        table.add_column(col, justify="left" if col in ("neighbour", "setting") else "right")
    for r in rows:
        rate = r["neighbour_steps_per_s"]
        table.add_row(
            r["neighbour"],
            r["setting"],
            str(r["threads"]),
            f"{r['steps_per_s']:.0f}",
            f"{r['share_of_alone']:.0%}",
            f"{r['share_of_default_alone']:.0%}",
            "-" if rate is None else f"{rate:.0f}",
            f"{r['foreign_cores']:.2f}",
        )
    console.print(table)
    payload = {"seconds": args.seconds, "repeats": args.repeats, "cores": machine_cores(), "rows": rows}
    path = write_result("threads", payload, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
