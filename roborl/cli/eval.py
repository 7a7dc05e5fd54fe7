"""`roborl eval PATH`: evaluate a checkpoint, rebuilt from the checkpoint alone (roborl.eval.load)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "Evaluate a checkpoint (or a run's latest one): success rate with 95% CI, return, cycle time, clips."
DESCRIPTION = (HELP + "\n\nThe policy, its normalizer and residual base are rebuilt from the checkpoint alone; the env is\n"
               "the one it was trained on unless --env says otherwise. Episode i resets with seed S+i.\n\n"
               "Examples:\n  roborl eval runs/push                      # latest checkpoint of a run\n"
               "  roborl eval runs/push/checkpoints/step_000050000 --episodes 50 --json\n"
               "  roborl eval runs/push --video push.mp4 --episodes 3\n"
               "  roborl eval runs/push --perturb configs/perturb_grid.yaml --json\n"
               "  roborl eval runs/push --env robot://192.168.1.20:5555 --episodes 10")

DEFAULT_GRID = "configs/perturb_grid.yaml"
_DEFAULT = "<default>"  # bare --perturb: the repo's configs/perturb_grid.yaml wherever we run from


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="A checkpoint directory, or a run directory (its latest checkpoint is used).")
    p.add_argument("--env", default=None, metavar="ID",
                   help="Env id to evaluate on (default: the checkpoint's env). Any id: gymnasium, dmc:, robot://.")
    p.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="Episodes (default: the run's train.eval_episodes).")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="Base seed; episode i resets with S+i (default: the run's training-time eval seed).")
    p.add_argument("--stochastic", action="store_true", help="Sample actions instead of the deterministic mean.")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    p.add_argument("--video", default=None, metavar="OUT.mp4", help="Record the sim episodes to an mp4 (headless).")
    p.add_argument("--perturb", nargs="?", const=_DEFAULT, default=None, metavar="GRID",
                   help=f"Also evaluate over a held-out dynamics grid (YAML; bare --perturb uses {DEFAULT_GRID}).")
    p.add_argument("--device", default=None, metavar="D", help="cpu, cuda or auto (default: the run's device).")
    p.add_argument("--env-imports", default="", metavar="MOD[,MOD]",
                   help="Modules the checkpoint's env.imports may import (never imported unless named here).")


def _split(mods: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in mods.split(",") if m.strip())


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError
    from roborl.eval.episodes import build_eval_env, eval_seed, run_episodes
    from roborl.eval.load import check_spaces, format_table, load_for_eval

    if args.episodes is not None and args.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {args.episodes}")
    policy, env_cfg, meta, step, ckpt, obs_norm = load_for_eval(args.path, args.device, args.env,
                                                                  allow_imports=_split(args.env_imports))
    cfg = meta.get("config", {})
    seed = args.seed if args.seed is not None else eval_seed(int(cfg.get("run", {}).get("seed", 0) or 0))
    episodes = args.episodes if args.episodes is not None else int(cfg.get("train", {}).get("eval_episodes", 10) or 10)
    grid = None
    if args.perturb is not None:
        from roborl.eval.perturb import load_grid

        grid = load_grid(None if args.perturb == _DEFAULT else args.perturb)  # fail fast on a bad grid file, before the nominal eval
    if args.video and str(env_cfg.id).startswith("robot://"):
        raise UsageError(f"--video records sim episodes only; env {env_cfg.id!r} is a real robot")

    env = build_eval_env(env_cfg, seed, video=bool(args.video), obs_normalizer=obs_norm)
    try:
        check_spaces(env, meta, env_cfg.id, policy)
        res = run_episodes(policy, env_cfg, episodes, seed, deterministic=not args.stochastic, env=env,
                           video_path=args.video, progress=not args.json)
    finally:
        env.close()
    out = res.to_json()
    if grid is not None:
        from roborl.eval.perturb import evaluate_grid, grid_summary

        entries = evaluate_grid(policy, env_cfg, grid, episodes, seed, deterministic=not args.stochastic,
                                progress=not args.json, obs_normalizer=obs_norm)
        out["perturb"] = entries
        out["perturb_summary"] = grid_summary(entries, nominal=out)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"checkpoint {ckpt} (step {step}, {meta.get('algo', '?')})  env {env_cfg.id}  seeds {seed}..{seed + episodes - 1}"
          f"  {'stochastic' if args.stochastic else 'deterministic'}")
    print(format_table(out))
    if args.video:
        print(f"video: {args.video}")
    if grid is not None:
        from roborl.eval.perturb import format_grid

        print()
        print(format_grid(out["perturb"], out["perturb_summary"]))
    sys.stdout.flush()
    return 0
