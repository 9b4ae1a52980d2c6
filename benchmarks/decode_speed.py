"""Policy decisions per second: autoregressive OpenVLA (one action, A tokens one after another) against
OpenVLA-OFT (a chunk of K actions, K x A tokens in one pass), same architecture, batch and observations.

Each configuration's ``act`` is timed ``--calls`` times per round, rounds alternating between
configurations (the machine is shared: ratios come from one run). Reported per configuration: policy calls
per second, env actions per second (calls x B x K), and both as multiples of the autoregressive policy's.

    python benchmarks/decode_speed.py [--arch tiny] [--batch 6] [--chunks 1 4 8] [--calls 10] [--rounds 3]
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

from vlarl.policies.openvla.factory import build_policy  # noqa: E402
from vlarl.policies.openvla_oft import OFTPolicy  # noqa: E402

ACTION_DIM = 4  # MetaWorld's
INSTRUCTIONS = ["reach the goal position", "push the drawer closed", "press the button from the top"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--batch", type=int, default=6, help="envs per call (B)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 8], help="OFT chunk lengths K")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    policies = {"openvla (autoregressive)": (build_policy(args.arch, ACTION_DIM, instructions=INSTRUCTIONS), 1)}
    for k in args.chunks:
        oft = build_policy(args.arch, ACTION_DIM, instructions=INSTRUCTIONS, cls=OFTPolicy, chunk_len=k)
        policies[f"openvla_oft K={k}"] = (oft, k)
    rng = np.random.default_rng(0)
    obs = {
        "image": rng.integers(0, 256, (args.batch, 1, 64, 64, 3), dtype=np.uint8),
        "instruction": [INSTRUCTIONS[b % 3] for b in range(args.batch)],
    }
    seconds: dict[str, list[float]] = {name: [] for name in policies}
    for policy, _ in policies.values():
        policy.eval().act(obs)  # warm-up
    for _ in range(args.rounds):
        for name, (policy, _) in policies.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                policy.act(obs)
            seconds[name].append((time.perf_counter() - start) / args.calls)

    rows = []
    for name, (_, k) in policies.items():
        per_call = statistics.median(seconds[name])
        rows.append(
            {
                "policy": name,
                "chunk_len": k,
                "s_per_call": per_call,
                "calls_per_s": 1 / per_call,
                "actions_per_s": args.batch * k / per_call,
            }
        )
    base = rows[0]
    for r in rows:
        r["calls_x"] = r["calls_per_s"] / base["calls_per_s"]
        r["actions_x"] = r["actions_per_s"] / base["actions_per_s"]

    table = Table(
        title=f"decisions per second: arch {args.arch}, B={args.batch}, A={ACTION_DIM}, CPU threads "
        f"{torch.get_num_threads()} (median of {args.rounds} rounds x {args.calls} calls)"
    )
    for col in ("policy", "K", "ms per call", "calls/s", "env actions/s", "calls x AR", "actions x AR"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in rows:
        table.add_row(
            r["policy"],
            str(r["chunk_len"]),
            f"{1000 * r['s_per_call']:.1f}",
            f"{r['calls_per_s']:.2f}",
            f"{r['actions_per_s']:.1f}",
            f"{r['calls_x']:.2f}",
            f"{r['actions_x']:.2f}",
        )
    Console(width=140).print(table)
    params = {
        "arch": args.arch,
        "batch": args.batch,
        "action_dim": ACTION_DIM,
        "calls": args.calls,
        "rounds": args.rounds,
    }
    print("wrote", write_result("decode_speed", {"params": params, "rows": rows}, args.out))


if __name__ == "__main__":
    main()
