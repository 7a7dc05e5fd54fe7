"""The per-step fast paths of the wrapper stack (issue 2 bench) give exactly what the plain
numpy formulations give: safety filter, joint-velocity screen, trusted env step, rescale,
observation normalization and DR noise."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import roborl  # noqa: F401 - registers our tasks
from roborl import config as C
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.dr import DomainRandomization, DRConfig
from roborl.envs.safety import EVENTS, SafetyConfig, SafetyLayer
from roborl.envs.wrappers import NormalizeObservation, RescaleAction, RunningMeanStd, find_wrapper


def _reference_filter(layer: SafetyLayer, action: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """The safety filter written with plain numpy calls (the pre-optimization implementation)."""
    u, cfg = layer.env.unwrapped, layer.config
    ev = dict.fromkeys(EVENTS, 0)
    a = np.array(action, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        ev["nonfinite"] = 1
        a = layer._hold()
    c = np.clip(a, layer._low, layer._high)
    ev["clipped"] = int(np.any(c != a))
    a = c
    scale = float(u.max_delta)
    delta = a[:3] * scale
    low, high = (np.asarray(b, dtype=np.float64) for b in u.workspace_bounds)
    low, high = low + cfg.workspace_margin, high - cfg.workspace_margin
    ee = np.asarray(u.ee_pos, dtype=np.float64)
    target = ee + delta
    proj = np.clip(target, low, np.maximum(low, high))
    if np.any(np.abs(proj - target) > 1e-12):
        ev["workspace"] = 1
        delta = proj - ee
    n = float(np.linalg.norm(delta))
    if n > cfg.max_step:
        ev["motion"] = 1
        delta = delta * (cfg.max_step / n)
    if float(np.dot(delta, delta)) > 0.0:
        jac = np.asarray(u.arm_jacobian(), dtype=np.float64)
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), delta) / float(u.control_dt)
        ratio = float(np.max(np.abs(dq) / (np.asarray(u.joint_vel_limits) * float(cfg.joint_vel_scale))))
        if ratio > 1.0:
            ev["joint_vel"] = 1
            delta = delta / ratio
    out = a.copy()
    out[:3] = np.clip(delta / scale, layer._low[:3], layer._high[:3])
    return out.astype(np.float32), ev


@pytest.mark.parametrize("safety", [{}, {"workspace_margin": 0.03, "max_step": 0.01, "joint_vel_scale": 0.1}])
def test_safety_filter_equals_the_numpy_reference(safety):
    env = gym.make("roborl/PickPlace-v0", safety=SafetyConfig(**safety))
    layer = find_wrapper(env, SafetyLayer)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    seen = dict.fromkeys(EVENTS, 0)
    for i in range(150):
        a = rng.uniform(-1.6, 1.6, 4).astype(np.float32)
        if i % 17 == 5:
            a[rng.integers(4)] = (np.nan, np.inf, -np.inf, 1e30)[i % 4]
        got, ev = layer.filter(a)
        want, want_ev = _reference_filter(layer, a)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32 and ev == want_ev
        for k, v in ev.items():
            seen[k] += v
        env.step(a)
    assert seen["nonfinite"] and seen["clipped"] and seen["motion"] and seen["workspace"]
    if safety:
        assert seen["joint_vel"]  # the exact recomputation ran, not only the screen


def test_joint_velocity_screen_bounds_the_exact_ratio():
    env = gym.make("roborl/Reach-v0", safety=SafetyConfig(joint_vel_scale=0.2))
    layer = find_wrapper(env, SafetyLayer)
    u = env.unwrapped
    rng = np.random.default_rng(1)
    env.reset(seed=1)
    exact_above_half = 0
    for _ in range(60):
        d = rng.normal(size=3) * rng.uniform(0.001, 0.03)
        jac = u.arm_jacobian()
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), d) / u.control_dt
        exact = float(np.max(np.abs(dq) / (u.joint_vel_limits * 0.2)))
        fast = layer._joint_vel_ratio_fast(*d.tolist())
        if exact > 0.5:
            exact_above_half += 1
            assert fast == pytest.approx(exact, rel=1e-9)
        else:
            assert fast >= exact * (1 - 1e-9)  # an upper bound: a screen never misses a limit
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    assert exact_above_half > 0


def test_trusted_step_equals_step():
    a_env, b_env = gym.make("roborl/Push-v0", safety=False), gym.make("roborl/Push-v0", safety=False)
    oa, _ = a_env.reset(seed=3)
    ob, _ = b_env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(20):
        act = rng.uniform(-1, 1, 4).astype(np.float32)
        ra = a_env.unwrapped.step(act)
        rb = b_env.unwrapped.step_in_bounds(act)
        np.testing.assert_array_equal(ra[0], rb[0])
        assert ra[1] == rb[1] and ra[4]["is_success"] == rb[4]["is_success"]
        np.testing.assert_array_equal(ra[4]["ee_pos"], rb[4]["ee_pos"])


def test_rescale_identity_path_equals_clip():
    env = RescaleAction(gym.make("roborl/Reach-v0", safety=False))
    env.reset(seed=0)
    for a in (np.array([2.0, -3.0, 0.5, np.nan], np.float32), np.array([0.1, 0.2, -0.3, 1.0], np.float64), [0.5, 5, -5, 0]):
        captured = {}
        inner_step = env.env.step

        def spy(x, inner_step=inner_step, captured=captured):
            captured["x"] = x
            return inner_step(np.nan_to_num(x))

        env.env.step = spy
        _, _, _, _, info = env.step(a)
        want = np.clip(np.array(a, dtype=np.float32), -1.0, 1.0)
        np.testing.assert_array_equal(captured["x"], want)
        assert captured["x"] is not a and info["executed_action"].dtype == np.float32
        del env.env.step


def test_normalizer_fast_update_equals_update_one_and_normalize():
    env = NormalizeObservation(gym.make("roborl/Push-v0"), clip=5.0)
    ref = RunningMeanStd(env.observation_space.shape)
    obs, _ = env.reset(seed=0)
    raw = env.env
    rng = np.random.default_rng(0)
    raw_obs, _ = raw.reset(seed=0)
    env.rms[""].__init__(env.observation_space.shape)  # same starting statistics for both
    for _ in range(30):
        a = rng.uniform(-1, 1, 4).astype(np.float32)
        raw_obs = raw.step(a)[0]
        got = env._update_normalize(env.rms[""], raw_obs)
        ref.update_one(np.asarray(raw_obs, dtype=np.float64))
        want = ref.normalize(raw_obs, 5.0, 1e-8).astype(np.float32)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(env.rms[""].var, ref.var)


def test_dr_noise_fast_path_equals_the_formula():
    cfg = C.build(DRConfig, {"enabled": True, "obs_noise_std": [0.01, 0.02], "action_noise_std": [0.05, 0.1],
                             "latency_steps": [1, 1]}, "test")
    env = DomainRandomization(gym.make("roborl/Reach-v0"), cfg, seed=7)
    env.reset(seed=7)
    # Replay the wrapper's noise stream: the same generator seeds, the same draw sizes in order.
    from roborl.envs.dr import _NormalStream
    _, st = np.random.SeedSequence([7, DomainRandomization._SALT]).spawn(2)
    stream = _NormalStream(np.random.default_rng(st))
    stream.take(env.observation_space.shape[0])  # the reset's observation noise
    inner_obs = []
    inner = env.env
    orig = inner.step

    def spy(x):
        out = orig(x)
        inner_obs.append(out[0])
        return out

    inner.step = spy
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(-1.5, 1.5, 4).astype(np.float32)
        obs, _, _, _, info = env.step(a)
        commanded = np.clip(np.asarray(a, np.float64) + env._act_std * stream.take(4), -1, 1).astype(np.float32)
        np.testing.assert_array_equal(info["executed_action"], commanded)
        want = (inner_obs[-1] + env._obs_std * stream.take(obs.size)).astype(np.float32)
        np.testing.assert_array_equal(obs, want)


def test_full_stack_is_deterministic_and_layers_are_the_documented_ones():
    cfg = C.build(EnvConfig, {"id": "roborl/Reach-v0", "normalize_obs": True,
                              "dr": {"enabled": True, "latency_steps": [0, 2], "obs_noise_std": [0, 0.01],
                                     "action_noise_std": [0, 0.05], "push_prob": 0.05}}, "test")
    runs = []
    for _ in range(2):
        env = build_env(cfg, seed=0)
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        traj = [obs]
        for _ in range(60):
            obs, r, te, tr, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            traj += [obs, np.array([r]), info["executed_action"], info["dr_params"]]
            if te or tr:
                traj.append(env.reset()[0])
        runs.append(np.concatenate([np.ravel(x).astype(np.float64) for x in traj]))
    np.testing.assert_array_equal(runs[0], runs[1])
    names = str(env)
    assert "PassiveEnvChecker" not in names and "SafetyLayer" in names and "OrderEnforcing" in names
