"""The ``vlarl`` command line: ``vlarl <command> [--preset P] [--config F] [key=value ...]``."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from vlarl.config import COMMANDS, ConfigError, describe, load_config
from vlarl.config.loader import available_presets
from vlarl.utils.run import make_run_dir

SUMMARIES = {"demos": "collect scripted-expert demonstrations into a dataset"}


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
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. env.num_envs=8")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        cfg = load_config(args.command, args.preset, args.config, args.overrides)
    except ConfigError as e:
        console.print(f"[red]config error:[/] {e}", highlight=False)
        return 2
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return 0
    if args.command == "demos":
        from vlarl.demos import collect_demos

        run_dir = make_run_dir(cfg, "demos", args.preset)
        console.print(f"run folder: {run_dir}")
        collect_demos(cfg, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
