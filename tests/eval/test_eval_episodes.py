"""run_episodes, EvalResult and the Wilson interval."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from roborl import config as C
from roborl.envs.config import EnvConfig
from roborl.eval.episodes import EvalResult, eval_seed, run_episodes, wilson_interval

KEYS = {"episodes", "success_rate", "success_ci95", "return_mean", "return_std", "length_mean",
        "time_to_success_mean", "safety_clips_mean"}


class LinearPolicy:
    """A fixed random linear policy: obs [1, d] -> tanh(obs W) [1, a] (deterministic), + N(0, 0.3) noise if stochastic."""

    def __init__(self, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        self.W = np.random.default_rng(seed).normal(size=(obs_dim, act_dim)).astype(np.float32)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        assert obs.ndim == 2 and obs.shape[0] == 1 and obs.dtype == np.float32
        a = np.tanh(obs @ self.W)
        if not deterministic:
            a = np.clip(a + 0.3 * torch.randn(a.shape).numpy(), -1, 1)
        return a


class Point1D(gym.Env):
    """x' = x + 0.1 a; success when |x - 1| < 0.15; terminates on success; 20-step limit.

    Reports a safety record like the SafetyLayer: info["safety"] per step, and episode totals
    in info["safety_episode"] at the last step (clipped whenever |a| > 0.5).
    """

    control_dt = 0.05

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-10, 10, (1,), np.float32)
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.5, 0.5))
        self.t = 0
        self.clips = 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        a = float(np.asarray(action).reshape(-1)[0])
        clipped = abs(a) > 0.5
        self.clips += int(clipped)
        self.x += 0.1 * float(np.clip(a, -0.5, 0.5)) * 2
        self.t += 1
        success = abs(self.x - 1.0) < 0.15
        done = success or self.t >= 20
        info = {"is_success": success, "safety": {"clipped": clipped}}
        if done:
            info["safety_episode"] = {"clips": self.clips}
        return np.array([self.x], np.float32), -abs(self.x - 1.0), success, self.t >= 20 and not success, info


class GoRight:
    def act(self, obs, deterministic=True):
        return np.ones((1, 1), np.float32)


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson_interval(1, 2)
    assert lo == pytest.approx(0.0945, abs=1e-4) and hi == pytest.approx(0.9055, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_result_json_keys_and_values():
    r = EvalResult.from_episodes([1.0, 3.0], [True, False], [10, 20], [2.0, 0.0], [0.5, None])
    j = r.to_json()
    assert set(j) == KEYS
    assert j["success_ci95"] == list(wilson_interval(1, 2))
    assert j["return_mean"] == 2.0 and j["return_std"] == 1.0 and j["length_mean"] == 15.0
    assert j["time_to_success_mean"] == 0.5 and j["safety_clips_mean"] == 1.0
    assert set(r.to_json(per_episode=True)) >= KEYS | {"returns", "successes"}


def test_success_cycle_time_and_clips_from_info():
    env = Point1D()
    res = run_episodes(GoRight(), EnvConfig(), 3, seed=5, env=env)
    assert res.successes == [True, True, True]
    for i, (n, t) in enumerate(zip(res.lengths, res.times_to_success)):
        # success is the terminating step, so time to success = length * control_dt
        assert t == pytest.approx(n * Point1D.control_dt)
        assert res.safety_clips[i] == n  # every action (1.0) exceeds 0.5
    assert res.time_to_success_mean == pytest.approx(np.mean(res.lengths) * 0.05)
    assert res.success_ci95 == wilson_interval(3, 3)


def test_episode_seeds_are_seed_plus_i_and_reproducible():
    cfg = C.build(EnvConfig, {"id": "Pendulum-v1", "max_episode_steps": 30})
    pol = LinearPolicy(3, 1)
    a = run_episodes(pol, cfg, 3, seed=eval_seed(0))
    b = run_episodes(pol, cfg, 3, seed=eval_seed(0))
    assert a.returns == b.returns and a.lengths == [30, 30, 30]
    # Episode i uses seed + i: the last two episodes of seed s are the first two of seed s+1.
    c = run_episodes(pol, cfg, 2, seed=eval_seed(0) + 1)
    assert c.returns == a.returns[1:]
    assert run_episodes(pol, cfg, 1, seed=123).returns != a.returns[:1]


def test_stochastic_eval_reproducible_and_leaves_global_rng_alone():
    cfg = C.build(EnvConfig, {"id": "Pendulum-v1", "max_episode_steps": 20})
    pol = LinearPolicy(3, 1)
    torch.manual_seed(0)
    before = torch.get_rng_state().clone()
    a = run_episodes(pol, cfg, 2, seed=7, deterministic=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = run_episodes(pol, cfg, 2, seed=7, deterministic=False)
    d = run_episodes(pol, cfg, 2, seed=7, deterministic=True)
    assert a.returns == b.returns and a.returns != d.returns


def test_bad_episode_count_is_usage_error():
    from roborl.errors import UsageError

    with pytest.raises(UsageError, match="episodes"):
        run_episodes(LinearPolicy(3, 1), C.build(EnvConfig, {"id": "Pendulum-v1"}), 0, seed=0)
