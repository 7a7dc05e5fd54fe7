"""The on-policy rollout's lean env stack (wrappers skip the info entries the runner's filter drops, the safety
layer's in-bounds shortcut) returns exactly what the reference stack returns, step by step: the same actions reach
MuJoCo, the same observations / rewards / terminations / truncations / kept infos come back, and the safety
layer's episode counts agree, including safety-clipped, non-finite and out-of-bounds actions."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from roborl import config as C
from roborl.envs.dr import DomainRandomization
from roborl.envs.safety import SafetyLayer
from roborl.envs.success import SUCCESS_KEYS
from roborl.envs.wrappers import EXECUTION_INFO_KEYS, RescaleAction, find_wrapper, skip_unread_info
from roborl.runners.config import RunConfig
from roborl.runners.on_policy import _env_fn

from tests.envs.test_vector import _same


def _actions(n_steps: int, dim: int, seed: int) -> list[Any]:
    """In-bounds actions, out-of-bounds rows, rows with NaN / inf, and float64 / list actions."""
    rng = np.random.default_rng(seed)
    acts: list[Any] = list(rng.uniform(-1.0, 1.0, size=(n_steps, dim)).astype(np.float32))
    for t in range(0, n_steps, 7):
        acts[t] = (acts[t] * 1.6).astype(np.float32)  # partly outside [-1, 1]
    for t in range(3, n_steps, 11):
        acts[t] = acts[t].copy()
        acts[t][t % dim] = np.nan if t % 2 else np.inf
    for t in range(5, n_steps, 13):
        acts[t] = acts[t].astype(np.float64)
    for t in range(9, n_steps, 17):
        acts[t] = acts[t].tolist()
    return acts


def _state(env: gym.Env) -> np.ndarray:
    d = env.unwrapped.data
    return np.concatenate([d.qpos, d.qvel, d.ctrl])


CASES = {
    # The runner's default stack: KeepInfo -> RescaleAction -> SafetyLayer -> gymnasium's wrappers.
    "cheetah": ({"id": "HalfCheetah-v5", "max_episode_steps": 30}, SUCCESS_KEYS),
    # Safety bounds narrower than [-1, 1]: the safety layer clips most actions.
    "cheetah_safety_clips": ({"id": "HalfCheetah-v5", "max_episode_steps": 30,
                              "safety": {"action_low": [-0.4] * 6, "action_high": [0.3] * 6}}, SUCCESS_KEYS),
    # Terminations, observation normalisation and last-action history between the filter and the reporters.
    "hopper_norm_history": ({"id": "Hopper-v5", "max_episode_steps": 40, "normalize_obs": True,
                             "obs_last_actions": 2}, SUCCESS_KEYS),
    # DR reads executed_action: the walk stops there, nothing below it is switched.
    "cheetah_dr": ({"id": "HalfCheetah-v5", "max_episode_steps": 30, "dr": {"enabled": True}}, SUCCESS_KEYS),
    # Our arm task: its safety layer (workspace box, motion and joint-velocity limits) sits inside
    # gymnasium's wrappers; is_success is kept; terminate on success.
    "push": ({"id": "roborl/Push-v0", "max_episode_steps": 25, "terminate_on_success": True}, SUCCESS_KEYS),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lean_stack_equals_reference_stack_step_by_step(case: str) -> None:
    env_cfg, keys = CASES[case]
    cfg = C.build(RunConfig, {"env": env_cfg})
    ref, lean = _env_fn(cfg.env, 3, keys, False), _env_fn(cfg.env, 3, keys, True)
    try:
        assert ref.skipped == []
        if case == "cheetah_dr":
            assert lean.skipped == []
        else:
            assert {type(w) for w in lean.skipped} == {RescaleAction, SafetyLayer}
        _same(ref.reset(seed=3), lean.reset(seed=3), "reset")
        dim = ref.action_space.shape[0]
        ref_safety, lean_safety = find_wrapper(ref, SafetyLayer), find_wrapper(lean, SafetyLayer)
        if ref_safety is None:  # our arm tasks wrap their safety layer inside gymnasium's wrappers
            ref_safety, lean_safety = ref.unwrapped.safety_layer, lean.unwrapped.safety_layer
        ends, seen = 0, dict.fromkeys(ref_safety.episode_counts, 0)
        for t, a in enumerate(_actions(120, dim, seed=len(case))):
            a2 = a.copy() if isinstance(a, np.ndarray) else list(a)
            r_out, l_out = ref.step(a), lean.step(a2)
            _same(r_out, l_out, f"step {t}")
            np.testing.assert_array_equal(_state(ref), _state(lean), err_msg=f"sim state at step {t}")
            assert ref_safety.episode_counts == lean_safety.episode_counts, t
            if r_out[2] or r_out[3]:
                ends += 1
                seen = {k: seen[k] + v for k, v in ref_safety.episode_counts.items()}
                _same(ref.reset(seed=100 + t), lean.reset(seed=100 + t), f"reset {t}")
        assert ends >= 1
        if case == "cheetah_safety_clips":
            assert seen["clipped"] > 0 and seen["nonfinite"] > 0
    finally:
        ref.close()
        lean.close()


def test_skip_unread_info_leaves_stacks_whose_caller_reads_the_entries() -> None:
    cfg = C.build(RunConfig, {"env": {"id": "HalfCheetah-v5"}})
    for key in EXECUTION_INFO_KEYS:
        env = _env_fn(cfg.env, 0, SUCCESS_KEYS + (key,), True)
        try:
            assert env.skipped == []
            assert find_wrapper(env, SafetyLayer).report_info and find_wrapper(env, RescaleAction).report_info
        finally:
            env.close()
    # No filter at all (the off-policy runner, env_step): every wrapper reports.
    env = _env_fn(cfg.env, 0, None)
    try:
        env.reset(seed=0)
        _, _, _, _, info = env.step(env.action_space.sample())
        assert set(EXECUTION_INFO_KEYS) <= set(info)
    finally:
        env.close()
    # A wrapper outside the table stops the walk (here DR, which reads executed_action).
    dr = C.build(RunConfig, {"env": {"id": "HalfCheetah-v5", "dr": {"enabled": True}}})
    from roborl.envs.config import build_env

    env = build_env(dr.env, seed=0)
    try:
        assert isinstance(env, DomainRandomization)
        assert skip_unread_info(env, SUCCESS_KEYS) == []
        assert skip_unread_info(env.env, SUCCESS_KEYS) == [env.env, find_wrapper(env, SafetyLayer)]
    finally:
        env.close()


@pytest.mark.parametrize("bounds", [None, ([-0.5] * 6, [0.25] * 6)])
def test_safety_in_bounds_shortcut_equals_full_filter(bounds: Any) -> None:
    """SafetyLayer.step's in-bounds shortcut against its full path (``_filter`` + ``_as_action``), on the
    bare env: the same action reaches MuJoCo and the same info entries come back."""
    from roborl.envs.safety import SafetyConfig

    scfg = SafetyConfig() if bounds is None else SafetyConfig(action_low=tuple(bounds[0]), action_high=tuple(bounds[1]))
    fast, ref = (SafetyLayer(gym.make("HalfCheetah-v5", max_episode_steps=50), scfg) for _ in range(2))
    ref._simple = False  # the plain formula
    assert fast._simple
    try:
        _same(fast.reset(seed=1), ref.reset(seed=1), "reset")
        for t, a in enumerate(_actions(80, 6, seed=7)):
            f_out = fast.step(a.copy() if isinstance(a, np.ndarray) else list(a))
            r_out = ref.step(a)
            _same(f_out, r_out, f"step {t}")
            exp, events = ref.filter(a)
            _same(f_out[4]["executed_action"], exp, f"executed {t}")
            np.testing.assert_array_equal(fast.unwrapped.data.ctrl, ref.unwrapped.data.ctrl)
            assert fast.episode_counts == ref.episode_counts
            if f_out[2] or f_out[3]:
                _same(fast.reset(seed=t), ref.reset(seed=t), f"reset {t}")
        # the shortcut's executed action is a copy of the caller's array, not the array itself
        a = np.zeros(6, dtype=np.float32)
        assert fast.step(a)[4]["executed_action"] is not a
    finally:
        fast.close()
        ref.close()
