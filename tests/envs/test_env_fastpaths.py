"""The per-step fast paths of the wrapper stack give exactly what the plain
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


@pytest.mark.parametrize("env_id,latency", [("roborl/Reach-v0", 0), ("roborl/Reach-v0", 1), ("HalfCheetah-v5", 2)])
def test_dr_noise_fast_path_equals_the_formula(env_id, latency):
    cfg = C.build(DRConfig, {"enabled": True, "obs_noise_std": [0.01, 0.02], "action_noise_std": [0.05, 0.1],
                             "latency_steps": [latency, latency]}, "test")
    env = DomainRandomization(gym.make(env_id, max_episode_steps=400), cfg, seed=7)
    obs_dtype = env.observation_space.dtype  # float32 (ours) or float64 (gymnasium MuJoCo)
    n_act = env.action_space.shape[0]
    # Replay the wrapper's per-step noise: the step generator's seed, then blocks of R rows of
    # standard normals, drawn in the order the wrapper first needs them (the reset's observation
    # noise, then the first step's action noise), scaled by the episode's std, rounded to the
    # data's dtype and added in it.
    _, st = np.random.SeedSequence([7, DomainRandomization._SALT]).spawn(2)
    rng = np.random.default_rng(st)
    inner_obs, inner_act = [], []
    inner = env.env
    orig_step, orig_reset = inner.step, inner.reset

    def spy(x):
        inner_act.append(np.array(x))
        out = orig_step(x)
        inner_obs.append(out[0])
        return out

    def spy_reset(**kw):
        out = orig_reset(**kw)
        inner_obs.append(out[0])
        return out

    inner.step, inner.reset = spy, spy_reset
    obs0, _ = env.reset(seed=7)
    R = env._act_noise.rows
    assert env._obs_noise.rows == R and 2 * R < 300
    obs_z, act_z = rng.standard_normal((R, obs0.size)), rng.standard_normal((R, n_act))

    def noisy_obs(raw, z):
        return raw + (env._obs_std * z).astype(obs_dtype)

    np.testing.assert_array_equal(obs0, noisy_obs(inner_obs[0], obs_z[0]))
    a_rng = np.random.default_rng(0)
    commanded = []
    for t in range(300):  # past several blocks: each refill continues the same generator
        if t % R == R - 1:  # the observation noise of step t is row t + 1 (row 0 went to the reset)
            obs_z = np.concatenate([obs_z, rng.standard_normal((R, obs0.size))])
        if t % R == 0 and t:
            act_z = np.concatenate([act_z, rng.standard_normal((R, n_act))])
        a = a_rng.uniform(-1.5, 1.5, n_act).astype(np.float32)
        obs, _, term, trunc, info = env.step(a)
        noise = (env._act_std * act_z[t]).astype(np.float32)
        commanded.append(np.clip(a + noise, np.float32(-1), np.float32(1)))
        assert commanded[-1].dtype == np.float32
        if latency:  # else the safety layer's executed action (ours) or none
            np.testing.assert_array_equal(info["executed_action"], commanded[-1])
        hold = env._act_hold
        np.testing.assert_array_equal(inner_act[-1], commanded[t - latency] if t >= latency else hold)
        np.testing.assert_array_equal(obs, noisy_obs(inner_obs[-1], obs_z[t + 1]))
        assert obs.dtype == obs_dtype
        assert not term and not trunc  # one episode, so one std
    assert env._act_std > 0 and env._obs_std > 0


def test_dr_noise_is_reproducible_and_rescaled_per_episode():
    cfg = C.build(DRConfig, {"enabled": True, "obs_noise_std": [0.0, 0.05], "action_noise_std": [0.0, 0.2],
                             "latency_steps": [0, 1]}, "test")
    runs = []
    for _ in range(2):
        env = DomainRandomization(gym.make("roborl/Reach-v0", max_episode_steps=10), cfg, seed=3)
        env.reset(seed=3)
        out, stds = [], set()
        for t in range(60):
            obs, _, term, trunc, info = env.step(np.full(4, 0.3, np.float32))
            out += [obs, info["executed_action"]]
            stds.add((env._obs_std, env._act_std))
            # the noise rows carry this episode's std
            assert env._act_noise.std == env._act_std and env._obs_noise.std == env._obs_std
            if term or trunc:
                env.reset()
        runs.append(np.concatenate(out))
        assert len(stds) == 6  # a new std per episode
    np.testing.assert_array_equal(runs[0], runs[1])
    env.set_enabled(False)
    obs, _ = env.reset()
    o2, _, _, _, info = env.step(np.full(4, 0.3, np.float32))
    np.testing.assert_array_equal(info["executed_action"], np.full(4, 0.3, np.float32))  # DR off: no noise


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


def test_clip_function_is_bit_identical_to_maximum_minimum():
    from roborl.envs.wrappers import _clip_minmax, clip_function

    vals = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e300, -1e300, 0.5,
                     1.0000001, -5e-324, 5e-324, 2.0, -2.0, 9.99, 10.01])
    vals = np.concatenate([vals, np.random.default_rng(0).normal(size=40) * 3])
    for lo, hi in [(-1.0, 1.0), (-10.0, 10.0), (2.0, 1.0), (-np.inf, np.inf), (0.5, 3.0), (0.0, 1.0), (-0.0, 0.0)]:
        for dt in (np.float64, np.float32):
            with np.errstate(over="ignore"):
                x = vals.astype(dt)
            for lo_a, hi_a in [(np.array(lo, dt), np.array(hi, dt)),
                               (np.full(x.size, lo, dt), np.full(x.size, hi, dt))]:
                want = np.minimum(np.maximum(x, lo_a), hi_a)
                f = clip_function(lo_a, hi_a)
                assert (f is _clip_minmax) == (lo == 0 or hi == 0)  # zero bounds keep maximum + minimum
                assert f(x, lo_a, hi_a).tobytes() == want.tobytes()
                out = np.empty_like(x)
                f(x, lo_a, hi_a, out)
                assert out.tobytes() == want.tobytes()


def test_rescale_step_clipped_equals_step():
    envs = [RescaleAction(gym.make("roborl/PickPlace-v0")) for _ in range(2)]
    for e in envs:
        e.reset(seed=4)
    rng = np.random.default_rng(4)
    for t in range(40):
        a = np.clip(rng.uniform(-1.5, 1.5, 4), -1, 1).astype(np.float32)
        if t % 9 == 4:
            a[1] = np.nan  # clipping keeps NaN: the safety layer holds it
        ra = envs[0].step(a.copy())
        rb = envs[1].step_clipped(a.copy())
        np.testing.assert_array_equal(ra[0], rb[0])
        assert ra[1:4] == rb[1:4]
        for k in ("executed_action", "ee_pos"):
            assert ra[4][k].tobytes() == rb[4][k].tobytes() and ra[4][k].dtype == rb[4][k].dtype
        assert ra[4]["safety"] == rb[4]["safety"]


@pytest.mark.parametrize("per_element", [True, False])
def test_dr_apply_equals_the_fancy_index_formulation(per_element):
    from roborl.envs.dr import NOMINAL_FIELDS

    cfg = C.build(DRConfig, {"enabled": True, "per_element": per_element, "gain_scale": [0.5, 2.0]}, "test")
    env = DomainRandomization(gym.make("roborl/Push-v0"), cfg, seed=5)
    m = env.unwrapped.model
    for ep in range(3):
        env.reset(seed=ep)
        nom, v = env.nominal(), env._values
        want = {f: nom[f].copy() for f in NOMINAL_FIELDS}
        ids = env._bodies
        want["body_mass"][ids] = nom["body_mass"][ids] * v["mass_scale"]
        want["body_inertia"][ids] = nom["body_inertia"][ids] * v["mass_scale"][:, None]
        want["body_subtreemass"][:] = env._ancestors @ want["body_mass"]
        want["geom_friction"][env._geoms, 0] = nom["geom_friction"][env._geoms, 0] * v["friction_scale"]
        want["dof_damping"][env._dofs] = nom["dof_damping"][env._dofs] * v["damping_scale"]
        full = np.ones(m.nu)
        full[env._acts] = v["gain_scale"]
        want["actuator_gainprm"][env._acts, 0] = nom["actuator_gainprm"][env._acts, 0] * full[env._acts]
        kp = env._bias_kp
        assert len(kp)  # the arm's position servos: kp sits in biasprm[:, 1] too
        want["actuator_biasprm"][kp, 1] = nom["actuator_biasprm"][kp, 1] * full[kp]
        for f in NOMINAL_FIELDS:
            got = getattr(m, f)
            if f == "body_subtreemass":  # mj_setConst then recomputes it, summing in its own order
                np.testing.assert_allclose(got, want[f], rtol=1e-12)
            else:
                assert got.tobytes() == want[f].tobytes(), f
        assert not np.array_equal(m.body_mass, nom["body_mass"])


@pytest.mark.parametrize("per_element", [True, False])
def test_dr_episode_parameters_equal_per_term_uniform_draws(per_element):
    cfg = C.build(DRConfig, {"enabled": True, "per_element": per_element, "gain_scale": [0.5, 2.0],
                             "friction_scale": [0.3, 1.7], "latency_steps": [0, 3], "obs_noise_std": [0.0, 0.02],
                             "action_noise_std": [0.01, 0.1], "push_prob": 0.1}, "test")
    env = DomainRandomization(gym.make("roborl/PickPlace-v0"), cfg, seed=0)
    for seed in (0, 1, 2):
        env.reset(seed=seed)
        rng = np.random.default_rng(np.random.SeedSequence([seed, DomainRandomization._SALT]).spawn(2)[0])
        for ep in range(3):  # the episode generator continues across resets
            if ep:
                env.reset()
            want = {term: rng.uniform(lo, hi, size=len(ids) if per_element else 1)
                    for term, (lo, hi), ids in env._scale_terms}
            assert set(want) == {"mass_scale", "friction_scale", "damping_scale", "gain_scale"}
            latency = int(rng.integers(0, 4))
            obs_std, act_std = float(rng.uniform(0.0, 0.02)), float(rng.uniform(0.01, 0.1))
            for term, v in want.items():
                assert env._values[term].tobytes() == v.tobytes(), term
            assert (env._latency, env._obs_std, env._act_std) == (latency, obs_std, act_std)
            flat = np.concatenate(list(want.values()) + [np.array([latency, obs_std, act_std])]).astype(np.float32)
            np.testing.assert_array_equal(env.params[:-3], flat)
