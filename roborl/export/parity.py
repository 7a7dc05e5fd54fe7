"""Parity of an exported file with ``roborl eval``'s policy on recorded observations.

The reference is what ``roborl eval`` sends to the env's inner action space: the eval
policy's deterministic action (after the env stack's frozen observation normaliser, when
the run had one) mapped by the env's own ``RescaleAction.action`` (float64 numpy).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from roborl.eval.load import checkpoint_obs_normalizer
from roborl.export.policy import build_eval_env, load_checkpoint_policy

__all__ = ["record_observations", "reference_actions", "parity", "flatten_obs"]


def _reference(path: str | Path, allow_imports: tuple[str, ...] = ()) -> tuple[Any, Any, Any]:
    """(policy, env_cfg, state) of a checkpoint."""
    policy, env_cfg, state, _meta, _step, _ckpt = load_checkpoint_policy(path, allow_imports)
    return policy, env_cfg, state


def flatten_obs(obs: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """A (nested) Dict observation -> {dotted leaf name: array} (the store's and the exported file's names)."""
    out: dict[str, np.ndarray] = {}
    for k, v in obs.items():
        if isinstance(v, dict):
            out.update(flatten_obs(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _act_env_units(policy: Any, env: Any, raw_obs: Any) -> np.ndarray:
    """roborl eval's action for raw observations [N, O] (or {leaf: [N, *shape]}), in env units [N, A] (float64)."""
    from roborl.envs.wrappers import NormalizeObservation, RescaleAction, find_wrapper

    if isinstance(raw_obs, dict):
        a = np.asarray(policy.act({k: np.asarray(v) for k, v in raw_obs.items()}, deterministic=True), dtype=np.float64)
        rw = find_wrapper(env, RescaleAction)
        return a if rw is None else np.stack([np.asarray(rw.action(row), dtype=np.float64) for row in a])
    obs = np.asarray(raw_obs)
    nw = find_wrapper(env, NormalizeObservation)
    if nw is not None:
        obs = nw.normalize(obs)
    a = np.asarray(policy.act(np.asarray(obs, dtype=np.float32), deterministic=True), dtype=np.float64)
    rw = find_wrapper(env, RescaleAction)
    if rw is None:
        return a
    return np.stack([np.asarray(rw.action(row), dtype=np.float64) for row in a])


def _load_norm(env: Any, state: dict[str, Any]) -> None:
    from roborl.envs.wrappers import load_obs_normalizer_state

    load_obs_normalizer_state(env, checkpoint_obs_normalizer(state))


def record_observations(path: str | Path, n: int = 1000, seed: int = 12345,
                        allow_imports: tuple[str, ...] = ()) -> Any:
    """``n`` raw observations [n, O] float32 from deterministic episodes of the checkpoint's eval policy
    (Dict observations: ``{leaf: [n, *shape]}`` in the env's dtypes, cameras uint8).

    Raw = before the env stack's observation normaliser (what a robot would send to the exported file).
    """
    policy, env_cfg, state = _reference(path, allow_imports)
    raw_cfg = dataclasses.replace(env_cfg, normalize_obs=False)
    raw_env = build_eval_env(raw_cfg)
    ref_env = build_eval_env(env_cfg)
    _load_norm(ref_env, state)
    from roborl.envs.wrappers import NormalizeObservation, find_wrapper

    nw = find_wrapper(ref_env, NormalizeObservation)
    out: list[Any] = []
    try:
        ep = 0
        while len(out) < n:
            obs, _ = raw_env.reset(seed=seed + ep)
            ep += 1
            while len(out) < n:
                if isinstance(obs, dict):
                    o: Any = flatten_obs(obs)
                    out.append(o)
                    a = np.asarray(policy.act({k: v[None] for k, v in o.items()}, deterministic=True))[0]
                    obs, _r, term, trunc, _info = raw_env.step(a)
                    if term or trunc:
                        break
                    continue
                o = np.asarray(obs, dtype=np.float32)
                out.append(o)
                # Step the raw env with the agent action the eval env would take (its RescaleAction maps it).
                x = nw.normalize(o[None]) if nw is not None else o[None]
                a = np.asarray(policy.act(np.asarray(x, np.float32), deterministic=True))[0]
                obs, _r, term, trunc, _info = raw_env.step(a)
                if term or trunc:
                    break
    finally:
        raw_env.close()
        ref_env.close()
    if out and isinstance(out[0], dict):
        return {k: np.stack([o[k] for o in out]) for k in out[0]}
    return np.stack(out)


def reference_actions(path: str | Path, raw_obs: Any, allow_imports: tuple[str, ...] = ()) -> np.ndarray:
    """roborl eval's deterministic actions for raw observations [N, O], in env units [N, A] (float64)."""
    policy, env_cfg, state = _reference(path, allow_imports)
    env = build_eval_env(env_cfg)
    try:
        _load_norm(env, state)
        return _act_env_units(policy, env, raw_obs)
    finally:
        env.close()


def parity(path: str | Path, exported: str | Path, n: int = 1000, seed: int = 12345,
           allow_imports: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"observations": n, "max_abs_diff": d, ...}``: the exported file against roborl eval's policy."""
    from roborl.export.writers import detect_format, load_runner

    obs = record_observations(path, n, seed, allow_imports)
    ref = reference_actions(path, obs, allow_imports)
    got = load_runner(exported, threads=1)(obs)
    diff = np.abs(got.astype(np.float64) - ref)
    return {"file": str(exported), "format": detect_format(Path(exported)), "observations": int(len(ref)),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "action_range": [float(ref.min()), float(ref.max())]}
