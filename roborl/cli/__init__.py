"""The ``roborl`` command line.

Each subcommand lives in its own module exposing::

    HELP: str                                   # one line for `roborl --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # exit code

and is listed in :data:`COMMANDS` (an explicit registry, imported lazily so that
``roborl --help`` stays fast and a broken optional dependency only breaks its own
command). Usage errors raise :class:`UsageError` (or ``ConfigError``); ``main``
prints them as one line on stderr and exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from roborl.errors import ConfigError, UsageError


# name -> module path. Order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "train": "roborl.cli.train",
    "eval": "roborl.cli.eval",
    "collect": "roborl.cli.collect",
    "store": "roborl.cli.store",
    "config": "roborl.cli.config",
    "envs": "roborl.cli.envs",
    "plot": "roborl.cli.plot",
    "report": "roborl.cli.report",
    "teleop": "roborl.cli.teleop",
    "robot": "roborl.cli.robot",
    "export": "roborl.cli.export",
    "reward": "roborl.cli.reward",
    "encoder": "roborl.cli.encoder",
}

# One-line summaries for `roborl --help`, kept here so the top-level help imports nothing.
SUMMARIES: dict[str, str] = {
    "train": "Train SAC or PPO from a YAML run config (resumes from run.dir).",
    "eval": "Evaluate a checkpoint or run dir on a sim or robot env.",
    "collect": "Run a scripted or checkpoint policy into a replay store.",
    "store": "Inspect, verify or merge replay stores.",
    "config": "Show the resolved run config, or every config key.",
    "envs": "List and check environments.",
    "plot": "Plot learning curves of one or more runs.",
    "report": "Write a one-page Markdown report of a run.",
    "teleop": "Collect demos with a teleop device.",
    "robot": "Serve a robot (or its sim twin) over the network.",
    "export": "Export a checkpoint's policy to ONNX or TorchScript.",
    "reward": "Train or evaluate a success classifier on camera frames (learned reward).",
    "encoder": "Pretrain an image encoder on a store's demo frames (sac.encoder.weights).",
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _load(name: str):
    # Optional third-party dependencies are imported inside each command's run(), so an import
    # error here is a real bug and must surface.
    return importlib.import_module(COMMANDS[name])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="roborl",
        description="roborl: RL on real robots and in MuJoCo.\n\n"
                    "Example:\n  roborl train configs/default.yaml sac.lr=1e-4\n"
                    "Config precedence: defaults < YAML file < command-line overrides (key=value).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        if name != only:
            # Cheap placeholder so `roborl --help` lists every command without importing it.
            sub.add_parser(name, help=SUMMARIES.get(name, ""))
            continue
        mod = _load(name)
        # argparse %-formats help text; escape stray percent signs in module docs.
        desc = getattr(mod, "DESCRIPTION", mod.HELP).replace("%", "%%")
        p = sub.add_parser(name, help=mod.HELP.replace("%", "%%"), description=desc, formatter_class=_Formatter)
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="No progress bars.")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the command being run (fast startup, isolated failures).
    only = next((a for a in argv if not a.startswith("-")), None)
    if only not in COMMANDS:
        only = None
    try:
        parser = build_parser(only)
        # key=value overrides may come anywhere on the line, also after options such as --role:
        # argparse stops a positional list at the first option, so collect the stragglers here.
        args, extra = parser.parse_known_args(argv)
        if extra:
            stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
            if stray:
                parser.error(f"unrecognized arguments: {' '.join(stray)}")
            args.overrides = list(args.overrides or []) + extra
        if getattr(args, "quiet", False):
            os.environ["ROBORL_QUIET"] = "1"
        if not getattr(args, "_run", None):
            parser.print_help()
            return 0 if not argv else 2
        return int(args._run(args) or 0)
    except (UsageError, ConfigError) as e:
        print(f"roborl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roborl: interrupted", file=sys.stderr)
        return 130

