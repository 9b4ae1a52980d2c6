"""The ``vlarl`` command line: ``vlarl <command> [--preset P] [--config F] [key=value ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from vlarl.config import COMMANDS, ConfigError, describe, load_config
from vlarl.config.loader import available_presets
from vlarl.config.run import make_run_dir
from vlarl.utils.threads import apply_thread_plan

SUMMARIES = {
    "demos": "collect scripted-expert demonstrations into a dataset",
    "sft": "supervised warm-up of the policy on demonstrations",
    "train": "online RL (PPO/GRPO) from the SFT policy, with success before and after",
    "eval": "success per task on the fixed evaluation initial states (table, JSON, videos)",
}


def _fields_help(command: str) -> str:
    lines = ["config fields (override with key=value):"]
    for key, tp, default, text in describe(COMMANDS[command]):
        lines.append(f"  {key} ({tp}, default {default})\n      {text}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlarl",
        description="Online RL fine-tuning of vision-language-action robot policies.",
        epilog=f"presets: {', '.join(available_presets())}\n`vlarl <command> --help` lists every config field.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, cls in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=SUMMARIES[name],
            description=cls.__doc__,
            epilog=_fields_help(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--preset", help=f"a shipped preset: {', '.join(available_presets())}")
        p.add_argument("--config", help="a YAML file with config sections, applied after the preset")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        if name == "eval":
            p.add_argument("--checkpoint", help="policy checkpoint folder (same as eval.checkpoint=...)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. env.num_envs=8")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if args.command is None:
        build_parser().print_help()
        return 2
    overrides = list(args.overrides)
    base = None
    if args.command == "eval":
        checkpoint = args.checkpoint or _override_value(overrides, "eval.checkpoint")
        if not checkpoint:
            console.print("[red]config error:[/] eval needs --checkpoint <folder>")
            return 2
        overrides += [f"eval.checkpoint={checkpoint}", f"policy.checkpoint={checkpoint}"]
        base = _checkpoint_env(checkpoint)
    try:
        cfg = load_config(args.command, args.preset, args.config, overrides, base=base)
    except ConfigError as e:
        console.print(f"[red]config error:[/] {e}", highlight=False)
        return 2
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return 0
    apply_thread_plan("policy", cfg)  # before torch/numpy load: their thread pools read the variables once
    run_dir = make_run_dir(cfg, args.command, args.preset)
    console.print(f"run folder: {run_dir}")
    if args.command == "demos":
        from vlarl.demos import collect_demos

        collect_demos(cfg, console)
    elif args.command == "sft":
        from vlarl.sft import run_sft

        run_sft(cfg, run_dir, console)
    elif args.command == "train":
        from vlarl.trainer import run_train

        run_train(cfg, run_dir, console)
    elif args.command == "eval":
        from vlarl import envs
        from vlarl.evaluate import evaluate_policy
        from vlarl.policies import make_policy

        spec = envs.make_backend(cfg.env).spec(cfg.env.num_envs)
        policy = make_policy(cfg.policy, spec.action_dim, spec.proprio_dim)
        evaluate_policy(policy, cfg.env, cfg.eval, cfg.eval.output or run_dir / "eval", console, seed=cfg.run.seed)
    return 0


def _override_value(overrides: list[str], key: str) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), "")


def _checkpoint_env(checkpoint: str) -> dict | None:
    """The env section of the run that wrote ``checkpoint`` (the base layer of `vlarl eval`)."""
    path = Path(checkpoint) / "run_config.yaml"
    if not path.is_file():
        return None
    return {"env": OmegaConf.to_container(OmegaConf.load(path))["env"]}


if __name__ == "__main__":
    sys.exit(main())
