"""`roborl envs list` / `roborl envs check ID`: which envs exist, and does one work here."""
from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "List our tasks, or check that an env id makes, resets and steps (prints its spaces)."
DESCRIPTION = (HELP + "\n\nAny gymnasium id (e.g. HalfCheetah-v5), any dm_control suite task as "
               "dmc:<domain>-<task>, and robot://HOST:PORT work wherever an env id is asked for.\n\n"
               "Examples:\n  roborl envs list\n  roborl envs check roborl/Push-v0\n"
               "  roborl envs check dmc:cartpole-swingup --steps 200\n"
               "  roborl envs check HalfCheetah-v5 --stack env.dr.enabled=true   # through build_env")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "check"], help="list: our tasks; check: make, reset and step ID.")
    p.add_argument("id", nargs="?", help="Env id (for check).")
    p.add_argument("--steps", type=int, default=100, help="Random-action steps for check.")
    p.add_argument("--seed", type=int, default=0, help="Seed for check.")
    p.add_argument("--stack", nargs="*", metavar="KEY=VALUE", default=None,
                   help="Check through build_env (safety, rescale, DR, normalization) with these env.* overrides.")
    p.add_argument("--json", action="store_true", help="Print JSON.")


def _our_tasks() -> list[tuple[str, str]]:
    """(id, one-line description) of every task in our registry table."""
    import importlib

    try:
        registry = importlib.import_module("roborl.envs.registry")
    except ModuleNotFoundError as e:
        if e.name == "roborl.envs.registry":
            return []
        raise
    table: Any = getattr(registry, "TASKS", {})
    import gymnasium as gym

    out = []
    for env_id in (table if isinstance(table, dict) else [getattr(t, "id", str(t)) for t in table]):
        spec = gym.registry.get(env_id)
        steps = spec.max_episode_steps if spec is not None else None
        out.append((env_id, f"max_episode_steps={steps}" if steps else ""))
    return out


def _space(s: Any) -> str:
    return str(s)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from roborl.errors import UsageError

    if args.action == "list":
        tasks = _our_tasks()
        if args.json:
            print(json.dumps({"tasks": [t for t, _ in tasks]}))
            return 0
        print("Our tasks (gymnasium ids registered by `import roborl`):")
        for env_id, doc in tasks or [("(none registered yet)", "")]:
            print(f"  {env_id:28s} {doc}")
        print("Also: any gymnasium id (e.g. HalfCheetah-v5; add packages with env.imports=[module]),\n"
              "      dmc:<domain>-<task> for the dm_control suite (e.g. dmc:cartpole-swingup),\n"
              "      robot://HOST:PORT for a real robot behind `roborl robot serve`.")
        return 0

    if not args.id:
        raise UsageError("envs check: give an env id, e.g. roborl envs check roborl/Push-v0")
    if args.steps < 0:
        raise UsageError(f"--steps: must be >= 0, got {args.steps}")
    if args.stack is not None:
        from roborl import config as C
        from roborl.envs.config import EnvConfig, build_env

        over = C.parse_overrides(args.stack)
        extra = over.pop("env", {}) if isinstance(over.get("env"), dict) else {}
        if over:
            raise UsageError(f"--stack: overrides must start with 'env.', got {sorted(over)[0]!r}")
        cfg = C.build(EnvConfig, {**extra, "id": args.id}, "--stack")
        env = build_env(cfg, seed=args.seed)
    else:
        from roborl.envs.make import make_env

        env = make_env(args.id)
    try:
        obs, info = env.reset(seed=args.seed)
        env.action_space.seed(args.seed)
        ret, n_eps, finite = 0.0, 0, True
        for _ in range(args.steps):
            obs, r, term, trunc, info = env.step(env.action_space.sample())
            ret += float(r)
            flat = [np.asarray(v) for v in (obs.values() if isinstance(obs, dict) else [obs])]
            finite &= all(np.all(np.isfinite(v)) for v in flat if np.issubdtype(v.dtype, np.number)) and np.isfinite(r)
            if term or trunc:
                n_eps += 1
                obs, info = env.reset()
        report = {"id": args.id, "env": str(env), "observation_space": _space(env.observation_space),
                  "action_space": _space(env.action_space), "steps": args.steps, "episodes_ended": n_eps,
                  "return_sum": round(ret, 4), "finite": bool(finite), "info_keys": sorted(info)}
    finally:
        env.close()
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:18s} {v}")
    if not finite:
        print("roborl: error: NaN or inf in observations or rewards", flush=True)
        return 1
    return 0
