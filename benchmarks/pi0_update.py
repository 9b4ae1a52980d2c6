"""What one learner micro-batch of a pi0 preset costs: ``evaluate`` forward and backward over recorded chains, per
log-prob mode (joint: every denoising step scored; one-step: one drawn step per chain) and per frozen part (none,
the vision towers, the whole VLM backbone).

Each configuration builds the preset's policy afresh (same seed), acts once on a random batch of ``--batch``
observations (64 px images, the preset's instructions) to record chains, then times ``--repeats`` forward+backward
passes of ``evaluate`` on them (median; one warm-up pass first). Rounds alternate the configurations (the machine is
shared: compare ratios within one run). Prints a table and writes JSON (``--out``, by default
``benchmarks/results/pi0_update.json``).

    python benchmarks/pi0_update.py [--preset metaworld_mt2_pi0_tiny] [--batch 32] [--repeats 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl.config import load_config  # noqa: E402
from vlarl.envs import make_backend  # noqa: E402
from vlarl.policies import make_policy  # noqa: E402

CONFIGS = [  # (log-prob mode, frozen part)
    ("joint", "none"),
    ("joint", "vision"),
    ("joint", "backbone"),
    ("one-step", "none"),
    ("one-step", "backbone"),
]


def time_config(preset: str, mode: str, frozen: str, batch: int, repeats: int) -> float:
    """Median seconds of one ``evaluate`` forward+backward over ``batch`` recorded decisions."""
    joint = "true" if mode == "joint" else "false"
    cfg = load_config("train", preset=preset, overrides=[f"policy.pi0.joint_logprob={joint}"])
    spec = make_backend(cfg.env).spec(cfg.env.num_envs)
    instructions = [spec.instructions[t] for t in spec.tasks]
    torch.manual_seed(0)
    policy = make_policy(cfg.policy, spec.action_dim, spec.proprio_dim, instructions=instructions)
    if frozen == "vision":
        policy.freeze_vision()
    elif frozen == "backbone":
        policy.freeze_backbone()
    rng = np.random.default_rng(0)
    obs = {
        "image": rng.integers(0, 256, (batch, *spec.image_shape), dtype=np.uint8),
        "proprio": rng.normal(size=(batch, spec.proprio_dim)).astype(np.float32),
        "instruction": [instructions[i % len(instructions)] for i in range(batch)],
    }
    out = policy.act(obs, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        policy.zero_grad()
        logp, _, value = policy.evaluate(out.inputs, out.tokens, chain=out.chain, denoise_step=out.denoise_step)
        (logp.mean() + value.mean()).backward()

    step()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="metaworld_mt2_pi0_tiny", help="a pi0 preset (%(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="decisions per micro-batch (%(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per configuration and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all configurations (%(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (%(default)s)")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/pi0_update.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[tuple[str, str], list[float]] = {c: [] for c in CONFIGS}
    for _ in range(args.rounds):
        for mode, frozen in CONFIGS:
            times[(mode, frozen)].append(time_config(args.preset, mode, frozen, args.batch, args.repeats))
    base = statistics.median(times[("joint", "none")])
    rows = []
    table = Table(title=f"{args.preset}: evaluate forward+backward, {args.batch} decisions")
    for col in ("log-prob", "frozen", "ms (median of rounds)", "x joint, none"):
        table.add_column(col, justify="right")
    for (mode, frozen), ts in times.items():
        ms = 1000 * statistics.median(ts)
        rows.append({"logprob": mode, "frozen": frozen, "ms": round(ms, 1), "rounds_ms": [round(1000 * t) for t in ts]})
        rows[-1]["speedup"] = round(base * 1000 / ms, 2)
        table.add_row(mode, frozen, f"{ms:.0f}", f"{rows[-1]['speedup']:.2f}")
    Console().print(table)
    params = {"preset": args.preset, "batch": args.batch, "repeats": args.repeats, "rounds": args.rounds}
    path = write_result("pi0_update", {"params": params, "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
