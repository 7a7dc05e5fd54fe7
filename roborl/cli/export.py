"""`roborl export RUN|CKPT --format onnx|torchscript --out FILE`: a self-contained deterministic policy file."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HELP = "Export a checkpoint's deterministic policy to ONNX or TorchScript (obs in, env-unit actions out)."
DESCRIPTION = (HELP + "\n\nThe file holds the observation normalisation, the residual base policy (SAC residual mode), the\n"
               "deterministic actor, the rescaling into the env's action box and the clip to it; the robot\n"
               "server's workspace projection stays outside. Inputs: 'obs' [B, O] float32 (one input per key for\n"
               "Dict observations; image policies: the image encoder too, one input per leaf such as 'pixels.front'\n"
               "[B, H, W, 3] uint8 and 'proprio' [B, P]), B dynamic. Metadata (spaces, control rate, config hash) travels in the file.\n"
               "ONNX needs the 'export' extra: pip install 'roborl[export]'.\n\n"
               "Examples:\n  roborl export runs/push --format onnx --out push.onnx\n"
               "  roborl export runs/push/checkpoints/step_000020000 --format torchscript --out push.pt\n"
               "  roborl export runs/push --format onnx --out push.onnx --check 1000   # parity vs roborl eval")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from roborl.export import FORMATS

    p.add_argument("path", help="A checkpoint directory, or a run directory (its latest checkpoint is used).")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="File format.")
    p.add_argument("--out", required=True, metavar="FILE", help="Output file (.onnx or .pt).")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="After writing, compare with roborl eval's policy on N recorded observations (0 = off); "
                        "prints the max abs difference as JSON.")
    p.add_argument("--env-imports", default="", metavar="MOD[,MOD]",
                   help="Modules the checkpoint's env.imports may import (never imported unless named here).")


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError
    from roborl.export import FORMATS
    from roborl.export.policy import load_exported

    if args.format == "onnx":
        from roborl.export.writers import require_onnx

        require_onnx(runtime=bool(args.check))  # before any work: one line naming the extra
    if args.check < 0:
        raise UsageError(f"--check must be >= 0, got {args.check}")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name")
    allow = tuple(m.strip() for m in args.env_imports.split(",") if m.strip())
    exp = load_exported(args.path, allow)
    mod, fn = FORMATS[args.format].split(":")
    getattr(importlib.import_module(mod), fn)(exp, out)
    summary = {"out": str(out), "format": args.format, "algo": exp.meta["algo"], "env_id": exp.meta["env_id"],
               "checkpoint_step": exp.meta["checkpoint_step"], "config_hash": exp.meta["config_hash"],
               "stages": exp.meta["stages"]}
    if args.check:
        from roborl.export.parity import parity

        summary["parity"] = parity(args.path, out, n=args.check, allow_imports=allow)
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0
