"""`roborl plot RUN [RUN ...] --out curves.png`: learning curves, runs overlaid (roborl.eval.plots)."""
from __future__ import annotations

import argparse

HELP = "Plot learning curves (return, success vs env steps and wall time) of one or more runs."
DESCRIPTION = (HELP + "\n\nRuns sharing a config apart from run.seed/run.dir/run.name are averaged: mean +- 95% CI.\n\n"
               "Examples:\n  roborl plot runs/push --out push.png\n"
               "  roborl plot runs/push-s0 runs/push-s1 runs/push-s2 runs/push-lr1e4-s0 --out compare.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="Run directories (each with metrics.jsonl).")
    p.add_argument("--out", default="curves.png", help="Output image (PNG, or any extension matplotlib writes).")
    p.add_argument("--title", default=None, help="Figure title.")
    p.add_argument("--no-training", action="store_true",
                   help="Skip the training-diagnostics figure (alpha, Q, TD error, losses, clips, interventions), "
                        "written next to --out as <stem>_training.png.")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from roborl.eval.plots import plot_runs, plot_training

    out = plot_runs(args.runs, args.out, args.title)
    print(f"wrote {out}")
    if not args.no_training:
        diag = plot_training(args.runs, Path(out).with_name(Path(out).stem + "_training.png"), args.title)
        print(f"wrote {diag}")
    return 0
