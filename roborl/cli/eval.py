"""`roborl eval PATH`: evaluate a checkpoint, rebuilt from the checkpoint alone (issue 8)."""
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


def load_for_eval(path: str, device: str | None = None, env_id: str | None = None):
    """Load a checkpoint and rebuild ``(policy, env_cfg, meta, step, ckpt_dir, obs_normalizer)`` from it alone.

    ``env_id`` replaces the env id (and drops the training env's constructor kwargs, which
    belong to the old env). Errors are one-line UsageErrors.
    """
    import dataclasses

    from roborl import config as C
    from roborl.checkpoint import find_checkpoint, load_checkpoint
    from roborl.envs.config import EnvConfig
    from roborl.errors import ConfigError, UsageError
    from roborl.learners import load_policy
    from roborl.runs import resolve_device

    state, meta, step = load_checkpoint(path)
    ckpt = find_checkpoint(path)
    cfg = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("env"), dict):
        raise UsageError(f"corrupt checkpoint {ckpt}: meta has no 'config.env' (the run config it was trained with)")
    try:
        env_cfg = C.build(EnvConfig, cfg["env"], f"{ckpt}/state.json meta.config.env")
    except ConfigError as e:
        raise UsageError(f"checkpoint {ckpt}: its env config no longer builds: {e}") from None
    if env_id is not None and env_id != env_cfg.id:
        env_cfg = dataclasses.replace(env_cfg, id=env_id, kwargs={})
    dev = resolve_device(device or str(cfg.get("device", "auto")))
    try:
        policy = load_policy(state, meta, dev)
    except (UsageError, ConfigError) as e:
        msg = str(e)
        raise UsageError(msg if str(ckpt) in msg else f"checkpoint {ckpt}: {msg}") from None
    except Exception as e:  # missing/mis-shaped tensors in a hand-edited or truncated checkpoint
        msg = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"corrupt checkpoint {ckpt}: cannot rebuild the policy ({type(e).__name__}: {msg[:200]})") from None
    return policy, env_cfg, meta, step, ckpt, checkpoint_obs_normalizer(state)


def checkpoint_shapes(meta: dict[str, Any]) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """``(obs_shape, act_shape)`` saved in a checkpoint's meta: ``obs_shape``/``act_shape`` (SAC),
    else ``dims.obs``/``dims.act`` (PPO); None where the checkpoint does not say."""
    dims = meta.get("dims") if isinstance(meta.get("dims"), dict) else {}
    out: list[tuple[int, ...] | None] = []
    for key, dkey in (("obs_shape", "obs"), ("act_shape", "act")):
        v = meta.get(key)
        if v is None and dims.get(dkey) is not None:
            v = [dims[dkey]]
        try:
            out.append(None if v is None else tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v])))
        except (TypeError, ValueError):
            out.append(None)
    return out[0], out[1]


def check_spaces(env: Any, meta: dict[str, Any], env_id: str, policy: Any = None) -> None:
    """UsageError when the env's observation/action shapes differ from the checkpoint's.

    With ``policy``, also probe it once on a zero observation of the env's shape, so a
    checkpoint that records no shapes still fails with one line instead of a traceback.
    """
    import numpy as np

    from roborl.errors import UsageError

    want_obs, want_act = checkpoint_shapes(meta)
    for want, space, what in ((want_obs, env.observation_space, "observation"),
                              (want_act, env.action_space, "action")):
        have = getattr(space, "shape", None)
        if want is None or have is None:
            continue
        if tuple(want) != tuple(int(x) for x in have):
            raise UsageError(f"env {env_id!r}: {what} space shape {tuple(have)} does not match the checkpoint's "
                             f"{tuple(want)}")
    if policy is not None and getattr(env.observation_space, "shape", None) is not None:
        obs = np.zeros((1, *env.observation_space.shape), dtype=np.float32)
        try:
            act = np.asarray(policy.act(obs, deterministic=True))
        except (RuntimeError, ValueError, IndexError) as e:
            raise UsageError(f"env {env_id!r}: observation shape {tuple(env.observation_space.shape)} does not fit the "
                             f"checkpoint's policy ({str(e).splitlines()[0][:120]})") from None
        want = getattr(env.action_space, "shape", None)
        if want is not None and tuple(act.shape[1:]) != tuple(want):
            raise UsageError(f"env {env_id!r}: action space shape {tuple(want)} does not match the checkpoint's "
                             f"policy output {tuple(act.shape[1:])}")


def checkpoint_obs_normalizer(state: dict[str, Any]) -> dict[str, Any] | None:
    """The env-stack observation statistics a checkpoint carries (runs with ``env.normalize_obs``):
    ``state["obs_normalizer"]`` or ``state["env"]["obs_normalizer"]``; None when absent."""
    if not isinstance(state, dict):
        return None
    if state.get("obs_normalizer") is not None:
        return state["obs_normalizer"]
    env_state = state.get("env")
    return env_state.get("obs_normalizer") if isinstance(env_state, dict) else None


from roborl.eval.episodes import build_eval_env  # noqa: E402  (re-exported; lives with run_episodes)


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def format_table(res: dict[str, Any]) -> str:
    """A readable two-column table of an EvalResult.to_json() dict."""
    lo, hi = res["success_ci95"]
    rows = [
        ("episodes", str(res["episodes"])),
        ("success rate", f"{res['success_rate']:.3f}  (95% CI {lo:.3f}-{hi:.3f})"),
        ("return", f"{_fmt(res['return_mean'])} +- {_fmt(res['return_std'])}"),
        ("episode length", _fmt(res["length_mean"], 1)),
        ("time to success [s]", _fmt(res["time_to_success_mean"])),
        ("safety clips / episode", _fmt(res["safety_clips_mean"], 2)),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError
    from roborl.eval.episodes import eval_seed, run_episodes

    if args.episodes is not None and args.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {args.episodes}")
    policy, env_cfg, meta, step, ckpt, obs_norm = load_for_eval(args.path, args.device, args.env)
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
