"""FastSyncVectorEnv returns exactly what gymnasium's SyncVectorEnv returns (same envs, same actions), step by step:
observations, rewards, terminations, truncations and the whole info dict (final_obs / final_info of ended envs,
every key with its ``_key`` mask), through terminations, truncations and autoresets."""
from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from roborl import config as C
from roborl.envs.success import SUCCESS_KEYS
from roborl.envs.vector import FastSyncVectorEnv
from roborl.runners.config import RunConfig
from roborl.runners.on_policy import _env_fn, make_vec_env


def _same(a: Any, b: Any, where: str = "") -> None:
    """Recursive exact equality of vector-env outputs (arrays, object arrays of arrays / dicts, dicts)."""
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{where}: {a!r} != {b!r}"


CASES = {
    # Hopper terminates when it falls; a 40-step limit also truncates; full infos (no key filter).
    "hopper_terminate_truncate_all_infos": ({"id": "Hopper-v5", "max_episode_steps": 40}, None),
    # The runner's setting: infos filtered to the success keys (usually empty), DR on.
    "cheetah_dr_success_keys": ({"id": "HalfCheetah-v5", "max_episode_steps": 25, "dr": {"enabled": True}},
                                SUCCESS_KEYS),
    # Our arm task: is_success infos every step, DR parameters as a dict info.
    "push_dr_infos": ({"id": "roborl/Push-v0", "max_episode_steps": 20, "dr": {"enabled": True}},
                      SUCCESS_KEYS + ("dr_params",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fast_sync_vector_env_equals_gymnasium_sync(case: str) -> None:
    env, keys = CASES[case]
    cfg = C.build(RunConfig, {"env": env})
    n = 3
    fns = [functools.partial(_env_fn, cfg.env, 5 + i, keys) for i in range(n)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    ref, fast = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode), FastSyncVectorEnv(fns, autoreset_mode=mode)
    try:
        _same(ref.reset(seed=[5, 6, 7]), fast.reset(seed=[5, 6, 7]), "reset")
        rng = np.random.default_rng(0)
        ended = 0
        for t in range(90):
            a = rng.uniform(-1.5, 1.5, (n, *ref.single_action_space.shape)).astype(np.float32)
            out_ref, out_fast = ref.step(a.copy()), fast.step(a.copy())
            _same(out_ref, out_fast, f"step {t}")
            ended += int(np.sum(out_ref[2] | out_ref[3]))
            assert out_fast[0] is not fast._observations  # a copy, as the parent's (copy=True)
        assert ended >= n  # autoresets were exercised
        if case.startswith("hopper"):
            assert "final_obs" in out_ref[4] or ended > 0
        np.testing.assert_array_equal(ref._autoreset_envs, fast._autoreset_envs)
    finally:
        ref.close()
        fast.close()


def test_hopper_case_covers_terminations() -> None:
    cfg = C.build(RunConfig, {"env": CASES["hopper_terminate_truncate_all_infos"][0]})
    envs = make_vec_env(cfg.env, 2, 0)
    try:
        envs.reset(seed=0)
        terms = 0
        rng = np.random.default_rng(1)
        for _ in range(120):
            terms += int(envs.step(rng.uniform(-1, 1, (2, 3)).astype(np.float32))[2].sum())
        assert terms > 0
    finally:
        envs.close()


def test_non_lean_settings_take_the_parent_step() -> None:
    """NEXT_STEP autoreset and a list of actions run gymnasium's own step (same results as the parent)."""
    cfg = C.build(RunConfig, {"env": {"id": "Pendulum-v1", "max_episode_steps": 3}})
    fns = [functools.partial(_env_fn, cfg.env, i, None) for i in range(2)]
    mode = gym.vector.AutoresetMode.NEXT_STEP
    ref, fast = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode), FastSyncVectorEnv(fns, autoreset_mode=mode)
    assert not fast._lean
    try:
        _same(ref.reset(seed=1), fast.reset(seed=1))
        for t in range(8):
            a = np.full((2, 1), 0.3 * (t % 3) - 0.3, dtype=np.float32)
            _same(ref.step(a), fast.step(a), f"step {t}")
    finally:
        ref.close()
        fast.close()
