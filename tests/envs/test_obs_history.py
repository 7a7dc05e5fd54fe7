"""env.obs_last_actions / env.obs_history: action and observation history in the observation."""
from __future__ import annotations

import numpy as np
import pytest

from roborl import config as C
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.wrappers import HistoryObservation, find_wrapper
from roborl.errors import ConfigError, UsageError
from roborl.eval.perturb import PerturbPoint, make_perturbed_env


def _env(**cfg):
    return build_env(C.build(EnvConfig, {"id": "HalfCheetah-v5", **cfg}), seed=0)


def test_history_is_newest_first_clipped_and_reset_to_hold():
    env = _env(obs_last_actions=2)
    try:
        assert find_wrapper(env, HistoryObservation) is not None
        assert env.observation_space.shape == (17 + 2 * 6,)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (29,) and np.all(obs[17:] == 0.0)  # the hold action: zero torque
        a1 = np.linspace(-0.5, 0.5, 6)
        a2 = np.array([3.0, -3.0, 0.2, 0.1, 0.0, -0.1])  # outside [-1, 1]: recorded as executed (clipped)
        env.step(a1)
        obs, *_ = env.step(a2)
        np.testing.assert_allclose(obs[17:23], np.clip(a2, -1, 1), rtol=0, atol=1e-7)
        np.testing.assert_allclose(obs[23:29], a1, rtol=0, atol=1e-7)
        obs, _ = env.reset(seed=1)
        assert np.all(obs[17:] == 0.0)  # no history leaks across episodes
    finally:
        env.close()


def test_history_records_commanded_action_not_the_delayed_or_noised_one():
    # DR delays the action by one step and adds obs noise; the history must hold what the learner
    # commanded, exactly (no noise): that is what a real controller knows.
    env = _env(obs_last_actions=1, dr={"enabled": True, "latency_steps": [1, 1], "obs_noise_std": [0.05, 0.05]})
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        prev = np.zeros(6)
        for _ in range(5):
            a = rng.uniform(-1, 1, 6)
            obs, _, _, _, info = env.step(a)
            np.testing.assert_array_equal(obs[17:], a.astype(np.float64))  # exact, float64 obs
            # The plant executed the previous command; the actor sees the one about to be executed.
            np.testing.assert_allclose(info["dr_applied_action"], prev, atol=1e-6)
            prev = a
    finally:
        env.close()


def test_perturbed_eval_env_keeps_the_history():
    cfg = C.build(EnvConfig, {"id": "InvertedPendulum-v5", "obs_last_actions": 1})
    env, steps = make_perturbed_env(cfg, PerturbPoint(latency_ms=40, mass_scale=1.5), seed=3)
    try:
        assert steps == 1 and env.observation_space.shape == (5,)
        obs, _ = env.reset(seed=3)
        assert obs.shape == (5,) and obs[-1] == 0.0
        obs, *_ = env.step(np.array([0.7]))
        assert obs[-1] == pytest.approx(0.7)
    finally:
        env.close()


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ConfigError, match="obs_last_actions"):
        C.build(EnvConfig, {"id": "HalfCheetah-v5", "obs_last_actions": -1})
    with pytest.raises(UsageError, match="obs_last_actions"):
        build_env(C.build(EnvConfig, {"id": "FrozenLake-v1", "obs_last_actions": 1}), seed=0)


def test_observation_history_shifts_and_starts_from_the_first_observation():
    env = _env(obs_history=2, obs_last_actions=1)
    try:
        assert env.observation_space.shape == (17 * 3 + 6,)
        o0, _ = env.reset(seed=0)
        for j in (1, 2):  # before any step, the past is the first observation
            np.testing.assert_array_equal(o0[17 * j:17 * (j + 1)], o0[:17])
        assert np.all(o0[51:] == 0.0)
        o1, *_ = env.step(np.full(6, 0.25))
        o2, *_ = env.step(np.full(6, -0.5))
        np.testing.assert_array_equal(o2[17:34], o1[:17])
        np.testing.assert_array_equal(o2[34:51], o1[17:34])
        np.testing.assert_array_equal(o2[34:51], o0[:17])
        np.testing.assert_allclose(o2[51:], -0.5)
        assert not np.array_equal(o2[:17], o1[:17])
    finally:
        env.close()
