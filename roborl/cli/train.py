"""`roborl train CONFIG [key=value ...]`: train, resuming from the latest checkpoint in run.dir."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

HELP = "Train a learner (train.algo: sac, ppo, td3, ddpg, sac_discrete, reinforce, a2c, npg, trpo, mbpo) from a YAML run config (resumes from run.dir's latest checkpoint)."
DESCRIPTION = (HELP + "\n\nConfig precedence: defaults < CONFIG file < key=value overrides.\n\n"
               "Examples:\n  roborl train configs/default.yaml\n"
               "  roborl train configs/default.yaml sac.lr=1e-4 env.id=roborl/Push-v0 run.dir=runs/push\n"
               "  roborl train configs/default.yaml run.dir=runs/push   # again: resumes from its latest checkpoint\n"
               "  roborl train configs/ppo_reach.yaml --nproc 2          # PPO on 2 data-parallel processes\n"
               "  torchrun --nproc_per_node 2 -m roborl train configs/ppo_reach.yaml   # the same, launched by hand")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config.")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sac.lr=1e-4 train.total_steps=20000")
    p.add_argument("--role", choices=["local", "learner", "actor"], default="local",
                   help="local: act and learn here; learner/actor: the split across machines.")
    p.add_argument("--learner", default=None, metavar="HOST:PORT", help="Learner address (with --role actor).")
    p.add_argument("--actor-id", default=None, metavar="ID",
                   help="With --role actor: this actor's identity at the learner (distributed.actor_id; default: "
                        "one kept in run.dir/actor_id). Each actor of a learner needs its own.")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="Data-parallel on-policy training on N local processes (torch's elastic launcher, as "
                        "`torchrun --nproc_per_node N -m roborl train ...`): gloo on CPU, NCCL on GPU.")


def run(args: argparse.Namespace) -> int:
    from roborl import config as C
    from roborl.errors import UsageError
    from roborl.runners import RUNNERS
    from roborl.runners.config import RunConfig
    from roborl.runs import check_run_dir, default_run_dir

    cfg = C.load(RunConfig, args.config, args.overrides)
    if getattr(args, "actor_id", None) is not None:
        import dataclasses

        if args.role != "actor":
            raise UsageError("--actor-id is for --role actor")
        cfg = dataclasses.replace(cfg, distributed=dataclasses.replace(cfg.distributed, actor_id=str(args.actor_id)))
    if args.role == "actor" and not args.learner:
        raise UsageError("--role actor needs --learner HOST:PORT")
    run_dir = check_run_dir(Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg.run.name))
    if args.nproc != 1:
        return _launch(args, cfg)
    mod_name, fn_name = RUNNERS[cfg.train.algo].split(":")  # train.algo was validated against the registry
    return int(getattr(importlib.import_module(mod_name), fn_name)(cfg, run_dir, args.role, args.learner) or 0)


def _launch(args: argparse.Namespace, cfg) -> int:
    """``--nproc N``: run this same command (without --nproc) on N ranks through torch.distributed.run."""
    import os

    from roborl.errors import UsageError
    from roborl.runners.dist import launch

    if args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: must be at least 1")
    if cfg.train.algo != "ppo":
        raise UsageError(f"--nproc: data-parallel training is for on-policy learners (train.algo=ppo), "
                         f"not {cfg.train.algo!r}")
    if args.role != "local":
        raise UsageError("--nproc runs with --role local only")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--nproc: already running under a distributed launcher (WORLD_SIZE is set)")
    argv = ["train", args.config, *args.overrides]
    if os.environ.get("ROBORL_QUIET") == "1":
        argv.insert(0, "--quiet")
    return launch(args.nproc, argv)
