"""Learner throughput: the serial ``Learner.update`` and the FSDP2 learner group against a bare loop of the
same model (framework overhead), on one PPO batch of toy-env episodes (64 px images, the ``tiny`` VLA).

The bare loop runs the same minibatches (same sizes, epochs, micro-batches) with the inputs prepared once in
advance and a plain clipped-ratio loss: what a hand-written PyTorch loop of ``policy.evaluate`` costs. Rounds
alternate between the configurations (the machine is shared: ratios come from one run). Samples are decisions
x epochs; overhead is 1 - learner / bare samples per second.

    python benchmarks/learner.py [--arch tiny] [--envs 8] [--ranks 2] [--rounds 3] [--threads 2]

The serial configurations run in this process with ``--threads`` torch threads; each rank has one CPU and
one thread (``placement.learner_cpus=1``), so on 2 cores both use the whole machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle threads sleep (utils/threads.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl.config import load_config  # noqa: E402
from vlarl.distributed.learner_group import LearnerGroup  # noqa: E402
from vlarl.envs import toy  # noqa: E402
from vlarl.policies.openvla.factory import build_policy  # noqa: E402
from vlarl.trainer import Trainer  # noqa: E402


def bare_loop(policy, batch, adv, minibatches, micro: int, lr: float) -> None:
    """Forward + backward + AdamW over ``minibatches`` of ``(t, b)`` rows, inputs prepared beforehand."""
    t_idx, b_idx = batch.mask.nonzero(as_tuple=True)
    prepared = [
        (policy.prepare(batch.observation(t_idx[r], b_idx[r])), batch.action_tokens[t_idx[r], b_idx[r]], r)
        for mb in minibatches
        for r in (torch.as_tensor(mb[m : m + micro]) for m in range(0, len(mb), micro))
    ]
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    policy.train()
    per_step = len(prepared) // len(minibatches)
    for i, (inputs, tokens, rows) in enumerate(prepared):
        logp = policy.evaluate(inputs, tokens)[0].flatten(1)
        old = batch.logprob[t_idx[rows], b_idx[rows]].flatten(1)
        a = adv[t_idx[rows], b_idx[rows]]
        ratio = (logp - old).exp()
        loss = -torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a).mean()
        loss.backward()
        if (i + 1) % per_step == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    policy.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--envs", type=int, default=8, help="episodes in the batch")
    parser.add_argument("--ranks", type=int, default=2, help="FSDP2 ranks of the learner group (0: skip it)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the serial configurations")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="vlarl-learner-bench-"))
    torch.manual_seed(0)
    build_policy(args.arch, toy.ACTION_DIM, instructions=list(toy.INSTRUCTIONS.values())).save(tmp / "start")
    overrides = ["trainer.init=checkpoint", f"policy.checkpoint={tmp / 'start'}", "algo.name=ppo"]
    overrides += [f"env.num_envs={args.envs}", "env.reward=dense", "algo.minibatch_size=32", "algo.grad_accum=2"]
    overrides += [f"run.threads={args.threads}"]
    cfg = load_config("train", "toy_micro", overrides=overrides)
    trainer = Trainer(cfg, tmp / "run", console)
    batch = trainer.collect()
    adv, ret = trainer.advantages(batch)
    trainer.venv.close()
    n = int(batch.mask.sum())
    samples = n * cfg.algo.epochs
    rng = np.random.default_rng(0)
    minibatches = [
        order[s : s + cfg.algo.minibatch_size]
        for order in (rng.permutation(n) for _ in range(cfg.algo.epochs))
        for s in range(0, n, cfg.algo.minibatch_size)
    ]
    micro = cfg.algo.minibatch_size // cfg.algo.grad_accum
    runs = {
        "bare loop": lambda: bare_loop(trainer.policy, batch, adv, minibatches, micro, cfg.algo.lr),
        "Learner.update (serial)": lambda: trainer.learner.update(batch, adv, ret, np.random.default_rng(0)),
    }
    group = None
    if args.ranks > 1:
        group_cfg = load_config("train", "toy_micro", overrides=[*overrides, f"placement.learner_ranks={args.ranks}"])
        group = LearnerGroup(
            trainer.policy, group_cfg, str(tmp / "start"), (toy.ACTION_DIM, 0), cfg.trainer.temperature
        )
        runs[f"FSDP2 group, {args.ranks} ranks"] = lambda: group.update(
            batch, adv, ret, np.random.default_rng(0), False
        )
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():  # warm-up: first-call costs (allocations, Ray's first transfer)
        run()
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    if group is not None:
        group.close()
    bare = samples / statistics.median(seconds["bare loop"])
    table = Table(title=f"learner throughput: {n} decisions x {cfg.algo.epochs} epochs, arch {args.arch}")
    for col in ("configuration", "s per update (median)", "samples/s", "vs bare loop", "overhead"):
        table.add_column(col, justify="right")
    rows = {}
    for name, times in seconds.items():
        rate = samples / statistics.median(times)
        rows[name] = {"seconds": times, "samples_per_s": rate, "vs_bare": rate / bare, "overhead": 1 - rate / bare}
        table.add_row(
            name, f"{statistics.median(times):.2f}", f"{rate:.1f}", f"{rate / bare:.2f}", f"{1 - rate / bare:.0%}"
        )
    console.print(table)
    path = write_result(
        "learner",
        {"arch": args.arch, "decisions": n, "epochs": cfg.algo.epochs, "samples": samples, "results": rows},
        args.out,
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
