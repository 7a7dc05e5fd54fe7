"""`roborl config show CONFIG [key=value ...]`: print the resolved run config."""
from __future__ import annotations

import argparse
import json

HELP = "Show the resolved run config (defaults < file < overrides)."
DESCRIPTION = HELP + "\n\nExample:\n  roborl config show configs/default.yaml sac.lr=1e-4\n  roborl config keys   # every key with its type, default and doc"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["show", "keys"], help="show: resolved config; keys: all keys documented.")
    p.add_argument("config", nargs="?", help="YAML run config.")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sac.lr=1e-4")
    p.add_argument("--json", action="store_true", help="Print JSON instead of YAML.")


def run(args: argparse.Namespace) -> int:
    from roborl import config as C
    from roborl.runners.config import RunConfig

    if args.action == "keys":
        for key, tp, default, doc in C.describe(RunConfig):
            print(f"{key:34s} {tp:22s} {default!s:14s} {doc}")
        return 0
    path = args.config
    overrides = list(args.overrides)
    if path is not None and "=" in path:  # only overrides were given
        overrides.insert(0, path)
        path = None
    cfg = C.load(RunConfig, path, overrides)
    print(json.dumps(C.to_dict(cfg), indent=2) if args.json else C.dump_yaml(cfg), end="" if not args.json else "\n")
    return 0
