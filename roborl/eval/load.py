"""Rebuild an acting policy and its env config from a checkpoint alone, and check it fits an env.

Used by ``roborl eval``, ``roborl report``, the perturbation grid and the benches: nothing here needs
training code or the run's config file.
"""
from __future__ import annotations

from typing import Any, Sequence


def load_for_eval(path: str, device: str | None = None, env_id: str | None = None,
                  allow_imports: Sequence[str] = ()):
    """Load a checkpoint and rebuild ``(policy, env_cfg, meta, step, ckpt_dir, obs_normalizer)`` from it alone.

    ``env_id`` replaces the env id (and drops the training env's constructor kwargs, which
    belong to the old env). Errors are one-line UsageErrors.

    A checkpoint's ``env.imports`` names modules to import before making the env. A checkpoint
    is data from elsewhere, so they are imported only when the user names each of them in
    ``allow_imports`` (``--env-imports``); otherwise this stops and says which are asked for.
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
    refused = [m for m in env_cfg.imports if m not in set(allow_imports)]
    if refused:
        raise UsageError(f"checkpoint {ckpt} asks to import {', '.join(refused)} (env.imports); a checkpoint cannot "
                         f"import code on its own: pass --env-imports {','.join(refused)} if you trust it")
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
        if what == "action" and isinstance(getattr(space, "n", None), (int, np.integer)) and have == ():
            have = (int(space.n),)  # gymnasium Discrete: checkpoints record act_shape = [n] (number of actions)
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
