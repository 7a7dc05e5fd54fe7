"""`roborl reward train|eval`: the learned success reward (a binary classifier on camera frames)."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "Train or evaluate a success classifier on camera frames (the learned reward)."
DESCRIPTION = """Train or evaluate a binary success classifier on the camera frames of replay stores
(HIL-SERL's learned reward). Positives are steps labelled success: steps whose is_success is set,
the last final_k steps of episodes that end in success (a teleop success decision labels the last
step), and operator-marked steps (field operator_label); every other step is a negative.

Training options are ClassifierTrainConfig fields (roborl/reward/config.py), set as key=value
after the flags or in a YAML file (--config); defaults < file < key=value.

Examples:
  roborl reward train --store demos/push_pix --out models/push_reward steps=1500 cameras=[image]
  roborl reward train --store a --store b --out models/r --encoder enc.safetensors proprio=true
  roborl reward eval models/push_reward --store demos/push_pix_heldout --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="reward_cmd", metavar="ACTION", parser_class=type(p))
    tr = sub.add_parser("train", help="Fit a classifier on the frames of one or more stores.")
    tr.add_argument("--store", action="append", required=True, help="Store directory (repeat for several).")
    tr.add_argument("--out", required=True, help="Model directory to write (model.safetensors + reward_model.json).")
    tr.add_argument("--config", default=None, help="YAML file of ClassifierTrainConfig fields.")
    tr.add_argument("--encoder", default=None, help="Frozen pretrained encoder: a local safetensors file "
                                                   "(roborl.reward.model.save_encoder).")
    tr.add_argument("--json", action="store_true", help="Print the saved metadata as JSON.")
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="ClassifierTrainConfig overrides.")
    ev = sub.add_parser("eval", help="Accuracy, precision, recall, false-positive rate, ROC AUC on held-out stores.")
    ev.add_argument("model", help="Model directory written by roborl reward train.")
    ev.add_argument("--store", action="append", required=True, help="Held-out store directory (repeat for several).")
    ev.add_argument("--threshold", type=float, default=None, help="Decision threshold (default: the model's).")
    ev.add_argument("--positives", choices=["step", "final", "both"], default=None,
                    help="How the held-out steps are labelled (default: the model's training rule); 'step' = each "
                         "step's is_success, the per-frame truth of a sim store.")
    ev.add_argument("--json", action="store_true", help="Print JSON.")


def _fmt(v: object) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError

    cmd = getattr(args, "reward_cmd", None)
    if cmd is None:
        raise UsageError("roborl reward: choose an action: train or eval (see roborl reward --help)")
    if cmd == "train":
        from roborl.config import load
        from roborl.reward.config import ClassifierTrainConfig

        over = list(args.overrides) + ([f"encoder={args.encoder}"] if args.encoder else [])
        cfg = load(ClassifierTrainConfig, args.config, over)
        from roborl.reward.train import train_classifier

        quiet = args.json or getattr(args, "quiet", False)
        meta = train_classifier(args.store, args.out, cfg, log=None if quiet else (lambda m: print(m, file=sys.stderr)))
        if args.json:
            print(json.dumps(meta, indent=1))
            return 0
        m = meta["metrics"]
        print(f"saved {args.out}  ({m['train_seconds']} s)")
        for split in ("train", "val"):
            if split in m:
                s = m[split]
                print(f"  {split:5s} n={s['n']} pos={s['positives']}  acc {_fmt(s['accuracy'])}  precision "
                      f"{_fmt(s['precision'])}  recall {_fmt(s['recall'])}  FPR {_fmt(s['false_positive_rate'])}  "
                      f"AUC {_fmt(s['roc_auc'])}")
        return 0
    if cmd == "eval":
        from roborl.reward.train import evaluate

        if args.threshold is not None and not 0.0 < args.threshold < 1.0:
            raise UsageError(f"--threshold: must be in (0, 1), got {args.threshold}")
        res = evaluate(args.model, args.store, args.threshold, positives=args.positives)
        if args.json:
            print(json.dumps(res, indent=1))
            return 0
        print(f"{res['model']} on {res['n']} frames ({res['positives']} positive, {res['episodes']} episodes), "
              f"threshold {res['threshold']}")
        for k in ("accuracy", "precision", "recall", "false_positive_rate", "roc_auc"):
            print(f"  {k:20s} {_fmt(res[k])}")
        return 0
    raise UsageError(f"roborl reward: unknown action {cmd!r}")
