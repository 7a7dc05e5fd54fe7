"""`roborl store info|verify|merge`: inspect, check and combine replay stores."""
from __future__ import annotations

import argparse
import json

HELP = "Inspect, verify or merge replay stores."
DESCRIPTION = """Inspect, verify or merge replay stores (crash-safe zarr stores; see roborl/store/store.py).

Examples:
  roborl store info demos/push
  roborl store verify runs/sac-push/store --json     # exit 0 sound, 1 with problems
  roborl store merge demos/push --into runs/sac-push/store --partition demo
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="store_cmd", metavar="ACTION", parser_class=type(p))
    info = sub.add_parser("info", help="Episodes and steps per partition, fields, size on disk.")
    info.add_argument("path", help="Store directory.")
    info.add_argument("--json", action="store_true", help="Print JSON.")
    ver = sub.add_parser("verify", help="Check every invariant (read-only). Exit 0 sound, 1 with problems.")
    ver.add_argument("path", help="Store directory.")
    ver.add_argument("--json", action="store_true", help="Print JSON {ok, demo, online, problems, warnings}.")
    ver.add_argument("--quick", action="store_true", help="Skip decoding every row (index and chunk checks only).")
    mer = sub.add_parser("merge", help="Copy every episode of SRC into a partition of DST (matching schemas).")
    mer.add_argument("src", help="Source store directory.")
    mer.add_argument("--into", required=True, help="Destination store directory (must exist).")
    mer.add_argument("--partition", choices=["demo", "online"], default="demo", help="Destination partition.")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError
    from roborl.store.store import ReplayStore

    cmd = getattr(args, "store_cmd", None)
    if cmd is None:
        raise UsageError("roborl store: choose an action: info, verify or merge (see roborl store --help)")
    if cmd == "info":
        with ReplayStore.open(args.path, mode="r") as st:
            info = st.info()
        if args.json:
            print(json.dumps(info, indent=1))
            return 0
        print(f"store {info['path']}  env {info['env_id']}  generation {info['generation']}  "
              f"size {_human(info['size_bytes'])}")
        for part in ("demo", "online"):
            d = info[part]
            extra = f", {d['evicted_episodes']} evicted" if part == "online" else ""
            print(f"  {part:6s} {d['episodes']:7d} episodes {d['steps']:10d} steps  {d['successes']} successful{extra}")
        if info["uncommitted_wal_steps"]:
            print(f"  ({info['uncommitted_wal_steps']} steps in the WAL, not yet committed)")
        print("  fields: " + ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in info["fields"].items()))
        return 0
    if cmd == "verify":
        from roborl.store.verify import verify_store

        res = verify_store(args.path, read_data=not args.quick)
        if args.json:
            print(json.dumps(res, indent=1))
        else:
            status = "OK" if res["ok"] else "PROBLEMS"
            print(f"{status}: {res['path']}  demo {res['demo']['episodes']} episodes / {res['demo']['steps']} steps, "
                  f"online {res['online']['episodes']} episodes / {res['online']['steps']} steps")
            for msg in res["problems"]:
                print(f"  problem: {msg}")
            for msg in res["warnings"]:
                print(f"  warning: {msg}")
        return 0 if res["ok"] else 1
    if cmd == "merge":
        with ReplayStore.open(args.into, mode="a") as dst:
            n = dst.merge_from(args.src, partition=args.partition)
            total = dst.num_episodes(args.partition)
        print(f"merged {n} episodes from {args.src} into {args.into} ({args.partition}: {total} episodes)"
              + (" (already merged before)" if n == 0 else ""))
        return 0
    raise UsageError(f"roborl store: unknown action {cmd!r}")
