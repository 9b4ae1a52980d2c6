"""Gradient noise of one RL update: the cosine between the policy gradients of two disjoint halves of a batch.

If an update's batch is big enough to carry a signal, two halves of it (disjoint groups of episodes) point
their policy gradients the same way (cosine well above 0); at too small a batch they are near-orthogonal
noise. One rollout of ``--episodes`` episodes from the preset's start policy is collected once; for each
half-size in ``--sizes`` (episodes per half), ``--repeats`` random splits into two disjoint halves of that
many episodes (whole GRPO groups) give a cosine each. A control with the advantages shuffled across the
batch shows the floor.

    python benchmarks/gradient_noise.py [--preset metaworld_fewshot] [--algo grpo] [--episodes 512]
                                        [--sizes 16 32 64 128 256] [--set key=value ...]

Prints a table and writes ``benchmarks/results/gradient_noise.json``.
"""

from __future__ import annotations

import argparse
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

from vlarl.config import load_config  # noqa: E402
from vlarl.learner import accumulate  # noqa: E402
from vlarl.trainer import Trainer  # noqa: E402


def policy_gradient(trainer: Trainer, batch, adv, ret, cols: list[int], micro: int = 64) -> torch.Tensor:
    """Flat gradient of the policy loss (no value term) over the steps of episodes ``cols`` with nonzero advantage."""
    keep = torch.zeros_like(batch.mask)
    keep[:, cols] = True
    t_idx, b_idx = (batch.mask & keep & (adv != 0).any(-1)).nonzero(as_tuple=True)
    params = trainer.learner.optimizer.param_groups[0]["params"]
    trainer.learner.optimizer.zero_grad(set_to_none=True)
    trainer.policy.train()
    parts = [(t_idx[s : s + micro], b_idx[s : s + micro]) for s in range(0, len(t_idx), micro)]
    accumulate(
        (len(t) / max(len(t_idx), 1), lambda t=t, b=b: trainer.learner.loss_of(batch, adv, ret, t, b, False, False))
        for t, b in parts
    )
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    trainer.learner.optimizer.zero_grad(set_to_none=True)
    return grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="metaworld_fewshot")
    parser.add_argument("--algo", default="grpo", choices=["grpo", "ppo"])
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    console = Console(width=120)
    num_envs = load_config("train", args.preset, overrides=args.overrides).env.num_envs
    cfg = load_config(
        "train",
        args.preset,
        overrides=[
            *args.overrides,
            f"algo.name={args.algo}",
            f"trainer.rounds={-(-args.episodes // num_envs)}",  # one collection of >= --episodes episodes
            "run.output_dir=runs/benchmarks",
            "run.name=bench-gnoise",
        ],
    )
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(cfg, run_dir, console)
    start = time.perf_counter()
    batch = trainer.collect()  # group ids are unique across rounds
    trainer.venv.close()
    collect_s = time.perf_counter() - start
    adv, ret = trainer.advantages(batch)
    group_ids = batch.group_id.unique().tolist()
    cols_of = {g: (batch.group_id == g).nonzero().squeeze(1).tolist() for g in group_ids}
    per_group = len(cols_of[group_ids[0]])
    rng = np.random.default_rng(0)
    shuffled = adv.clone()
    valid = batch.mask.nonzero(as_tuple=True)
    shuffled[valid] = adv[valid][torch.as_tensor(rng.permutation(len(valid[0])))]
    rows = []
    for size in args.sizes:
        n_groups = max(1, size // per_group)
        if 2 * n_groups > len(group_ids):
            continue
        for control, a in (("real", adv), ("shuffled", shuffled)):
            cosines = []
            for _ in range(args.repeats):
                pick = rng.permutation(group_ids)[: 2 * n_groups]
                halves = [[c for g in pick[h * n_groups : (h + 1) * n_groups] for c in cols_of[g]] for h in (0, 1)]
                g1, g2 = (policy_gradient(trainer, batch, a, ret, h) for h in halves)
                cosines.append(torch.nn.functional.cosine_similarity(g1, g2, dim=0).item())
            rows.append(
                {"episodes_per_half": n_groups * per_group, "advantages": control, "cosines": cosines}
                | {"mean": float(np.mean(cosines)), "std": float(np.std(cosines))}
            )
            console.print(f"{n_groups * per_group} episodes per half, {control}: cosine {np.mean(cosines):+.3f}")
    table = Table(title=f"policy-gradient cosine between two halves ({args.preset}, {args.algo})")
    for col in ("episodes per half", "advantages", "mean cosine", "std", "splits"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["episodes_per_half"]), r["advantages"], f"{r['mean']:+.3f}", f"{r['std']:.3f}", str(len(r["cosines"]))
        )
    console.print(table)
    success = batch.success.float().mean().item()
    payload = {"preset": args.preset, "algo": args.algo, "episodes": batch.success.numel(), "success": success}
    path = write_result("gradient_noise", payload | {"collect_s": collect_s, "rows": rows}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
