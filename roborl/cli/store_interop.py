"""`roborl store export STORE --format lerobot|minari --out DIR` and
`roborl store import SRC --format lerobot|minari --store STORE [--partition demo]`.

The ``store`` command wires these in as sub-actions (``add_export_arguments`` / ``run_export``,
``add_import_arguments`` / ``run_import``), following the command protocol of roborl/cli/__init__.py.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

EXPORT_HELP = "Export a replay store as a LeRobot v3 or Minari dataset."
IMPORT_HELP = "Import a LeRobot v3 or Minari dataset into a replay store (created when missing)."
EXPORT_DESCRIPTION = (EXPORT_HELP + "\n\nEvery live episode (demo partition first, then online). LeRobot: parquet + meta/ "
                      "(info.json, stats, episodes, tasks); a round trip is bit-exact for low-dimensional data. "
                      "Minari: OUT/data in Minari's arrow format; minari.load_dataset(ID) loads it when OUT is "
                      "$MINARI_DATASETS_PATH/ID. Needs the 'interop' extra: pip install 'roborl[interop]'.\n\n"
                      "Camera fields are written as mp4 (videos/, --video-codec).\n\n"
                      "Examples:\n  roborl store export demos/reach --format lerobot --out /data/reach_lerobot\n"
                      "  roborl store export demos/reach --format minari --out ~/.minari/datasets/roborl/reach-v0")
IMPORT_DESCRIPTION = (IMPORT_HELP + "\n\nSpaces, fps and features are checked against the store (and --env); a mismatch "
                      "is one line naming the field, exit 2. LeRobot camera streams (mp4 'video' features, or "
                      "'image' features in parquet) become uint8 camera leaves (pixels.<camera>).\n\n"
                      "Examples:\n  roborl store import /data/reach_lerobot --format lerobot --store mystore\n"
                      "  roborl store import roborl/reach-v0 --format minari --store mystore --partition online")


def _formats() -> list[str]:
    from roborl.interop import FORMATS

    return sorted(FORMATS)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="The replay store directory.")
    p.add_argument("--format", required=True, choices=_formats(), help="Dataset format.")
    p.add_argument("--out", required=True, metavar="DIR", help="Output directory (must be empty or absent).")
    p.add_argument("--fps", type=float, default=None,
                   help="LeRobot: frames per second (default: the store env's control rate).")
    p.add_argument("--task", default=None, help="LeRobot: the task string (default: the env id).")
    p.add_argument("--video-codec", default=None, choices=["h264", "av1", "lossless"],
                   help="LeRobot: codec of the camera streams' mp4 files: h264 (default; within codec tolerance), av1 "
                        "(LeRobot's default) or lossless (H.264 lossless RGB: bit-exact frames).")
    p.add_argument("--dataset-id", default=None, metavar="ID",
                   help="Minari: dataset id written to its metadata (default: roborl/<DIR name>).")


def run_export(args: argparse.Namespace) -> int:
    from roborl.interop import FORMATS

    mod = importlib.import_module(FORMATS[args.format])
    res = mod.export_store(Path(args.store), Path(args.out), fps=args.fps, task=args.task,
                           dataset_id=args.dataset_id, video_codec=args.video_codec)
    print(json.dumps(res))
    sys.stdout.flush()
    return 0


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="Dataset directory (LeRobot root; Minari dataset dir) or a local Minari dataset id.")
    p.add_argument("--format", required=True, choices=_formats(), help="Dataset format.")
    p.add_argument("--store", required=True, metavar="STORE", help="Replay store to append to (created when missing).")
    p.add_argument("--partition", default="demo", choices=["demo", "online"], help="Store partition to fill.")
    p.add_argument("--env", default=None, metavar="ID",
                   help="Env id to record in a new store and to check spaces and fps against.")
    p.add_argument("--fps", type=float, default=None, help="LeRobot: the fps the dataset must have.")


def run_import(args: argparse.Namespace) -> int:
    from roborl.interop import FORMATS

    mod = importlib.import_module(FORMATS[args.format])
    res = mod.import_dataset(args.src, Path(args.store), args.partition, env=args.env, fps=args.fps)
    print(json.dumps(res))
    sys.stdout.flush()
    return 0
