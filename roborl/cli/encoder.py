"""`roborl encoder pretrain|info`: image encoders for learning from cameras."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "Pretrain an image encoder on a store's demo frames, or show an encoder file."
DESCRIPTION = """Pretrain the image encoder that SAC loads frozen (sac.encoder.weights), or show one.

pretrain: objective=bc (default): behaviour cloning from the demo partition of one or more stores,
every frame randomly shifted (DrQ's augmentation): the encoder keeps what the demonstrator's action
depends on. objective=autoencoder arch=keypoints: a deep spatial autoencoder (Finn et al. 2016) that
reconstructs each camera through a spatial-softmax keypoint bottleneck; it uses no actions, so the
frames of random-action episodes (roborl collect --policy random) can be added as more --store.
objective=contrastive: InfoNCE that tells episodes apart from two randomly shifted frames of each, so
the features keep what a reset randomised (goal marker, object) and drop the moving arm; no actions
either. Options
are EncoderPretrainConfig fields (roborl/learners/config.py), set in a YAML file (--config) or as
key=value after the flags; defaults < file < key=value. The architecture (channels, layers,
feature_dim, downsample, shared) must equal the sac.encoder section that loads the file.

Examples:
  roborl encoder pretrain --store demos/push_pixels --out encoders/push_64.safetensors
  roborl encoder pretrain --store a --store b --out enc.safetensors steps=3000 cameras=[front] val_episodes=2
  roborl encoder pretrain --store demos/push_pixels --store random_rollouts --out kp.safetensors \
      objective=autoencoder arch=keypoints downsample=2 feature_dim=32 val_episodes=10 eval_every=250
  roborl encoder info encoders/push_64.safetensors
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="encoder_cmd", metavar="ACTION", parser_class=type(p))
    pre = sub.add_parser("pretrain", help="BC-pretrain an encoder on the demo frames of one or more stores.")
    pre.add_argument("--store", action="append", required=True, help="Store directory (repeat for several).")
    pre.add_argument("--out", required=True, help="Encoder file to write (safetensors + metadata).")
    pre.add_argument("--config", default=None, help="YAML file of EncoderPretrainConfig fields.")
    pre.add_argument("--init", default=None, help="Start from this encoder file (same input shapes and layout).")
    pre.add_argument("--device", default="cpu", help="Torch device.")
    pre.add_argument("--threads", type=int, default=None, help="Torch CPU threads.")
    pre.add_argument("--json", action="store_true", help="Print the saved metadata as JSON.")
    pre.add_argument("overrides", nargs="*", metavar="key=value", help="EncoderPretrainConfig overrides.")
    info = sub.add_parser("info", help="Input shapes, layout and training record of an encoder file.")
    info.add_argument("path", help="Encoder file (safetensors).")


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError

    cmd = getattr(args, "encoder_cmd", None)
    if cmd is None:
        raise UsageError("roborl encoder: choose an action: pretrain or info (see roborl encoder --help)")
    if cmd == "pretrain":
        from roborl.config import load
        from roborl.learners.config import EncoderPretrainConfig

        cfg = load(EncoderPretrainConfig, args.config, list(args.overrides))
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError(f"--threads: expected >= 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        from roborl.runs import resolve_device
        from roborl.runners.pretrain import LOSS_NAME, pretrain_encoder

        device = resolve_device(args.device)
        quiet = args.json or getattr(args, "quiet", False)
        meta = pretrain_encoder(args.store, args.out, cfg, device=device, init=args.init,
                                log=None if quiet else (lambda m: print(m, file=sys.stderr)))
        if args.json:
            print(json.dumps(meta, indent=1))
            return 0
        name = LOSS_NAME[cfg.objective]
        val = "" if meta[f"val_{name}"] is None else f", held-out {meta[f'val_{name}']:.4f}"
        print(f"saved {args.out}: {meta['objective']} ({cfg.arch}), cameras {sorted(meta['input_shapes'])}, "
              f"{meta['demo_steps']} steps, {name.replace('_', ' ')} {meta[f'train_{name}']:.4f}{val} ({meta['seconds']} s)")
        return 0
    if cmd == "info":
        from pathlib import Path

        from roborl.learners.encoders import read_encoder_meta

        if not Path(args.path).is_file():
            raise UsageError(f"roborl encoder info: no such file {args.path}")
        try:
            meta = read_encoder_meta(args.path)
        except Exception as e:
            raise UsageError(f"roborl encoder info: {args.path} is not a safetensors encoder file "
                             f"({type(e).__name__})") from None
        print(json.dumps(meta, indent=1))
        return 0
    raise UsageError(f"roborl encoder: unknown action {cmd!r}")
