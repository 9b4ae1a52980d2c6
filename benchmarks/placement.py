"""Rollout throughput of the placements: env-only, inference-only, and end to end for serial, collocated,
disaggregated and hybrid, on one workload (a fresh tiny VLA on a preset's envs, fixed envs and decisions).

Every collection runs ``--decisions`` decisions on ``--envs`` envs (no early end: ``terminate_on_success`` off,
``max_episode_steps`` = decisions x chunk). Measured, each the median of ``--repeats`` timed runs after one
warm-up run:

- ``t_env``: the envs alone (one ``SyncVectorEnv`` in this process, 1 thread, the collection's actions replayed);
- ``t_infer``: the policy alone (``act`` on the collection's observations, ``--rollout-threads`` threads);
- each mode's collection (serial: this process, the thread plan's threads; the Ray modes as in ``MODES``, on
  1 env CPU + ``--rollout-threads`` rollout CPUs).

The overlap bound of that split is ``(t_env + t_infer) / max(t_env, t_infer)``: what perfect overlap of env
stepping and inference gains over running them in turn. Reported per mode: env steps/s, speed-up over serial,
and that speed-up as a share of the bound. Every placed batch is checked to equal serial's (tokens, rewards).

    python benchmarks/placement.py [--preset metaworld_mt3_tiny] [--envs 8] [--decisions 20] [--repeats 2]
        [--rollout-threads 1] [--modes collocated disaggregated hybrid] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vlarl.utils.threads import apply_thread_plan  # noqa: E402

apply_thread_plan("policy")  # as the CLI: before torch and numpy load (the OpenMP wait policy is read once)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import write_result  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from vlarl import envs  # noqa: E402
from vlarl.config import load_config  # noqa: E402
from vlarl.distributed import place  # noqa: E402
from vlarl.policies import make_policy  # noqa: E402
from vlarl.policies.base import EnvGenerators  # noqa: E402
from vlarl.policies.openvla.checkpoint import save_pretrained  # noqa: E402
from vlarl.policies.openvla.factory import build_policy  # noqa: E402
from vlarl.rollout.collector import collect_episodes  # noqa: E402

MODES = {  # on 2 cores: the envs on one, inference on the other (collocated: they take turns on both)
    "collocated": ["placement.mode=collocated", "placement.rollout_cpus=2"],
    "disaggregated": ["placement.mode=disaggregated", "placement.env_workers=2", "placement.env_cpus=0.5"],
    "hybrid": ["placement.mode=hybrid", "placement.pipeline_stages=2"],
}
SPLIT = "placement.rollout_cpus={threads}"  # the disjoint modes' inference share


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call, and the last result."""
    result, seconds = fn(), []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="metaworld_mt3_tiny")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--decisions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rollout-threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("overrides", nargs="*", help="config overrides of the workload, e.g. env.render_meshes=full")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vlarl-placement-"))
    base = [f"env.num_envs={args.envs}", "env.num_workers=0", "env.terminate_on_success=false"]
    base += [f"env.max_episode_steps={args.decisions}", f"run.output_dir={root}", *args.overrides]
    cfg = load_config("train", args.preset, overrides=base)
    venv = envs.make(cfg.env)
    spec = venv.spec
    torch.manual_seed(0)
    start = root / "policy"
    instructions = [spec.instructions[t] for t in spec.tasks]
    save_pretrained(build_policy(cfg.policy.arch, spec.action_dim, instructions=instructions), start)
    cfg = load_config("train", args.preset, overrides=[*base, f"policy.checkpoint={start}"])
    apply_thread_plan("policy", cfg)
    policy = make_policy(cfg.policy, spec.action_dim, spec.proprio_dim).eval()
    tasks, seeds, groups = list(spec.env_tasks), list(range(args.envs)), list(range(args.envs))

    def collect(collector, env):
        return collector(policy, env, tasks, seeds, groups, seed=0, max_steps=args.decisions)

    console = Console()
    t_serial, serial = timed(lambda: collect(collect_episodes, venv), args.repeats)
    actions = serial.actions.numpy().astype(np.float64)  # what the envs ran, to replay without the policy

    def env_only():
        venv.reset(seed=0, options={"task": tasks, "init_seed": seeds})
        for chunk in actions:
            venv.step_chunk(chunk)

    torch.set_num_threads(args.rollout_threads)
    obs = [serial.observation(torch.full((args.envs,), t), torch.arange(args.envs)) for t in range(len(actions))]
    t_env, _ = timed(env_only, args.repeats)
    t_infer, _ = timed(
        lambda: [policy.act(o, generator=EnvGenerators(0, range(args.envs), t)) for t, o in enumerate(obs)],
        args.repeats,
    )
    apply_thread_plan("policy", cfg)
    venv.close()
    steps = serial.steps.sum().item()
    bound = (t_env + t_infer) / max(t_env, t_infer)
    rows = {"serial": {"seconds": t_serial, "same_batch": True}}
    for mode in args.modes:
        split = [] if mode == "collocated" else [SPLIT.format(threads=args.rollout_threads)]
        mode_cfg = load_config(
            "train", args.preset, overrides=[*base, f"policy.checkpoint={start}", *MODES[mode], *split]
        )
        env_workers, collector = place(mode_cfg, mode_cfg.policy)
        seconds, batch = timed(lambda c=collector, e=env_workers: collect(c, e), args.repeats)
        same = torch.equal(batch.action_tokens, serial.action_tokens) and torch.equal(batch.reward, serial.reward)
        rows[mode] = {"seconds": seconds, "same_batch": same, "placement": MODES[mode] + split}
        env_workers.close()
        collector.close()
    for row in rows.values():
        row["steps_per_s"] = steps / row["seconds"]
        row["speedup"] = t_serial / row["seconds"]
        row["share_of_bound"] = row["speedup"] / bound

    table = Table(title=f"rollout of {args.envs} envs x {args.decisions} decisions, {args.preset}")
    for col in ("", "env steps/s", "x serial", "share of bound", "same batch"):
        table.add_column(col, justify="right")
    table.add_row("env only", f"{steps / t_env:.1f}", "", "", "")
    table.add_row(f"inference only ({args.rollout_threads} thread)", f"{steps / t_infer:.1f}", "", "", "")
    for mode, row in rows.items():
        table.add_row(
            mode,
            f"{row['steps_per_s']:.1f}",
            f"{row['speedup']:.2f}",
            f"{row['share_of_bound']:.0%}",
            str(row["same_batch"]),
        )
    console.print(table)
    console.print(f"t_env {t_env:.2f} s, t_infer {t_infer:.2f} s: overlap bound {bound:.2f}x")
    path = write_result(
        "placement",
        {
            "args": vars(args),
            "env_steps": steps,
            "t_env_s": t_env,
            "t_infer_s": t_infer,
            "overlap_bound": bound,
            "modes": rows,
        },
        args.out,
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
