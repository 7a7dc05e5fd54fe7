"""`roborl store info|verify|merge|repair|export|import`: inspect, check, combine, repair and convert replay stores."""
from __future__ import annotations

import argparse
import json

HELP = "Inspect, verify, merge or repair replay stores."
DESCRIPTION = """Inspect, verify, merge or repair replay stores (crash-safe zarr stores; see roborl/store/store.py).

Examples:
  roborl store info demos/push                       # exit 2 with one line if a chunk is missing or damaged
  roborl store verify runs/sac-push/store --json     # exit 0 sound, 1 with problems (always prints the report)
  roborl store merge demos/push --into runs/sac-push/store --partition demo
  roborl store repair runs/sac-push/store            # after "corrupt record ... run roborl store repair"
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
    mer.add_argument("--allow-env-mismatch", action="store_true",
                     help="Merge even when SRC was recorded on another env_id (same spaces are not the same task).")
    rep = sub.add_parser("repair", help="Make a store whose WAL has a corrupt record writable again; "
                                        "prints what it keeps and what it drops.")
    rep.add_argument("path", help="Store directory.")
    rep.add_argument("--json", action="store_true", help="Print JSON.")
    from roborl.cli import store_interop

    exp = sub.add_parser("export", help=store_interop.EXPORT_HELP, description=store_interop.EXPORT_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    store_interop.add_export_arguments(exp)
    imp = sub.add_parser("import", help=store_interop.IMPORT_HELP, description=store_interop.IMPORT_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    store_interop.add_import_arguments(imp)


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
        raise UsageError("roborl store: choose an action: info, verify, merge, repair, export or import "
                         "(see roborl store --help)")
    if cmd in ("export", "import"):
        from roborl.cli import store_interop

        return int(store_interop.run_export(args) if cmd == "export" else store_interop.run_import(args))
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
            n = dst.merge_from(args.src, partition=args.partition, allow_env_mismatch=args.allow_env_mismatch)
            total = dst.num_episodes(args.partition)
        print(f"merged {n} episodes from {args.src} into {args.into} ({args.partition}: {total} episodes)"
              + (" (already merged before)" if n == 0 else ""))
        return 0
    if cmd == "repair":
        from roborl.store.repair import repair_store

        res = repair_store(args.path)
        if args.json:
            print(json.dumps(res, indent=1))
            return 0
        if not res["repaired"]:
            print(f"{res['path']}: nothing to repair (WAL {res['wal'] or 'none'} has no corrupt record before valid ones)")
            return 0
        rows = lambda d: ", ".join(f"{k} rows {v[0]}..{v[1]} ({v[2]} records)" for k, v in d.items()) or "none"  # noqa: E731
        rec = res["recovered"]
        print(f"repaired {res['path']} ({res['wal']} had a corrupt record at byte {res['corrupt_at_byte']})")
        print(f"  kept:    {res['kept_records']} records before it ({rows(res['kept_rows'])}); "
              f"{rec['replayed_steps']} steps replayed into the store"
              + (f", open episode closed as interrupted in {', '.join(rec['interrupted_episodes'])}"
                 if rec["interrupted_episodes"] else ""))
        print(f"  dropped: {res['dropped_bytes']} bytes from byte {res['corrupt_at_byte']} on: the corrupt record and "
              f"{res['dropped_records']} valid records after it ({rows(res['dropped_rows'])})")
        print(f"  the dropped bytes stay in {res['side_file']} (delete it when done)")
        return 0
    raise UsageError(f"roborl store: unknown action {cmd!r}")
