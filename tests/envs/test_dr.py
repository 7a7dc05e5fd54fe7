"""Domain randomization: reproducible by seed, new per episode, exact nominal restore, params exposed."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium import spaces

from roborl import config as C
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.dr import NOMINAL_FIELDS, DomainRandomization, DRConfig
from roborl.envs.make import make_env
from roborl.envs.wrappers import find_wrapper
from roborl.errors import ConfigError, UsageError

FULL = DRConfig(enabled=True, latency_steps=(0, 2), obs_noise_std=(0.0, 0.01), action_noise_std=(0.0, 0.05),
                push_prob=0.2, push_force=(1.0, 3.0), push_duration=(1, 3))


def _ours() -> str | None:
    import roborl  # noqa: F401 - registers our tasks

    for i in ("roborl/Reach-v0", "roborl/Push-v0"):
        if i in gym.registry:
            return i
    return None


def _ids() -> list:
    ours = _ours()
    return ["HalfCheetah-v5", "dmc:cartpole-swingup",
            pytest.param(ours or "roborl/Reach-v0", marks=pytest.mark.skipif(ours is None, reason="arm tasks not registered yet"))]


def _model_arrays(env: gym.Env) -> dict[str, np.ndarray]:
    m = env.unwrapped.model
    return {f: getattr(m, f).copy() for f in NOMINAL_FIELDS}


def _episodes(env: DomainRandomization, seed: int, n: int = 3, steps: int = 5) -> list[tuple[np.ndarray, dict]]:
    out = []
    for e in range(n):
        _, info = env.reset(seed=seed if e == 0 else None)
        out.append((info["dr_params"], _model_arrays(env)))
        rng = np.random.default_rng(e)
        for _ in range(steps):
            env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    return out


@pytest.mark.parametrize("env_id", _ids())
def test_reproducible_per_seed_and_new_each_episode(env_id):
    a = DomainRandomization(make_env(env_id), FULL, seed=11)
    b = DomainRandomization(make_env(env_id), FULL, seed=99)  # constructor seed is overridden by reset(seed)
    ea, eb = _episodes(a, seed=5), _episodes(b, seed=5)
    for (pa, ma), (pb, mb) in zip(ea, eb):
        np.testing.assert_array_equal(pa, pb)
        for f in NOMINAL_FIELDS:
            np.testing.assert_array_equal(ma[f], mb[f])
    assert not np.array_equal(ea[0][0], ea[1][0]) and not np.array_equal(ea[1][0], ea[2][0])
    other = _episodes(a, seed=6, n=1)
    assert not np.array_equal(other[0][0], ea[0][0])
    a.close(), b.close()


@pytest.mark.parametrize("env_id", _ids())
def test_params_exposed_and_applied(env_id):
    env = DomainRandomization(make_env(env_id), FULL, seed=0)
    nominal = env.nominal()
    _, info = env.reset(seed=1)
    p = info["dr_params"]
    assert p.dtype == np.float32 and p.shape == (len(env.param_names),) and np.array_equal(p, env.params)
    names = env.param_names
    assert len(set(names)) == len(names)
    idx = {n: i for i, n in enumerate(names)}
    m = env.unwrapped.model
    mass = [n for n in names if n.startswith("mass_scale/")]
    assert mass, names
    for i, b in enumerate(env._bodies):
        s = p[idx[mass[i]]]
        assert 0.8 <= s <= 1.2
        assert m.body_mass[b] == pytest.approx(nominal["body_mass"][b] * s, rel=1e-6)
        np.testing.assert_allclose(m.body_inertia[b], nominal["body_inertia"][b] * s, rtol=1e-6)
    assert m.body_subtreemass[0] == pytest.approx(m.body_mass.sum())
    for n in ("latency_steps", "obs_noise_std", "action_noise_std"):
        assert n in idx
    assert p[idx["latency_steps"]] in (0.0, 1.0, 2.0)
    env.close()


@pytest.mark.parametrize("env_id", _ids())
def test_exact_nominal_restore_when_off(env_id):
    fresh = make_env(env_id)
    ref = _model_arrays(fresh)
    env = DomainRandomization(make_env(env_id), FULL, seed=3)
    _episodes(env, seed=3, n=2, steps=10)
    assert any(not np.array_equal(_model_arrays(env)[f], ref[f]) for f in NOMINAL_FIELDS)
    env.set_enabled(False)
    got = _model_arrays(env)
    for f in NOMINAL_FIELDS:
        np.testing.assert_array_equal(got[f], ref[f], err_msg=f)
    assert not np.any(env.unwrapped.data.xfrc_applied)
    _, info = env.reset(seed=0)
    for _ in range(10):
        _, _, _, _, info = env.step(env.action_space.sample())
    for f in NOMINAL_FIELDS:
        np.testing.assert_array_equal(_model_arrays(env)[f], ref[f], err_msg=f)
    # Off: nominal values reported, and the trajectory equals the raw env's.
    assert np.all(env.params[[i for i, n in enumerate(env.param_names) if "scale" in n]] == 1.0)
    o1, _ = env.reset(seed=4)
    o2, _ = fresh.reset(seed=4)
    np.testing.assert_array_equal(o1, o2)
    for _ in range(5):
        a = env.action_space.sample()
        np.testing.assert_array_equal(env.step(a)[0], fresh.step(a)[0])
    env.close(), fresh.close()


def test_disabled_config_never_touches_model():
    env = DomainRandomization(make_env("Hopper-v5"), DRConfig(enabled=False), seed=0)
    ref = _model_arrays(env)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    for f in NOMINAL_FIELDS:
        np.testing.assert_array_equal(_model_arrays(env)[f], ref[f])


def test_latency_delays_actions_by_sampled_steps():
    cfg = DRConfig(enabled=True, mass_scale=(1.0, 1.0), friction_scale=(1.0, 1.0), damping_scale=(1.0, 1.0),
                   gain_scale=(1.0, 1.0), latency_steps=(2, 2))
    env = build_env(dataclasses.replace(EnvConfig(id="HalfCheetah-v5"), dr=cfg), seed=0)
    dr = find_wrapper(env, DomainRandomization)
    assert dr.param_names == ["latency_steps"]
    env.reset(seed=0)
    acts = [np.full(6, v, np.float32) for v in (0.1, 0.2, 0.3, 0.4)]
    applied, executed = [], []
    for a in acts:
        info = env.step(a)[4]
        applied.append(info["dr_applied_action"]), executed.append(info["executed_action"])
    np.testing.assert_allclose(applied[0], 0.0), np.testing.assert_allclose(applied[1], 0.0)
    np.testing.assert_allclose(applied[2], acts[0], rtol=1e-6), np.testing.assert_allclose(applied[3], acts[1], rtol=1e-6)
    for a, e in zip(acts, executed):  # the learner stores what it commanded, not the delayed action
        np.testing.assert_allclose(e, a, rtol=1e-6)
    env.close()


def test_pushes_apply_external_force_and_clear():
    cfg = DRConfig(enabled=True, push_prob=1.0, push_force=(2.0, 2.0), push_duration=(2, 2), push_bodies=("torso",))
    env = DomainRandomization(make_env("HalfCheetah-v5"), cfg, seed=0)
    env.reset(seed=0)
    torso = mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    info = env.step(env.action_space.sample())[4]
    f = env.unwrapped.data.xfrc_applied[torso, :3].copy()
    assert np.linalg.norm(f) == pytest.approx(2.0)
    np.testing.assert_allclose(info["dr_params"][-3:], f, rtol=1e-6)
    env.reset()
    assert not np.any(env.unwrapped.data.xfrc_applied)
    with pytest.raises(UsageError, match="push_bodies: no body named 'nope'"):
        DomainRandomization(make_env("HalfCheetah-v5"), dataclasses.replace(cfg, push_bodies=("nope",)))


POSITION_XML = """
<mujoco>
  <worldbody>
    <body name="link"><joint name="hinge" type="hinge" damping="0.5"/>
      <geom type="capsule" size="0.05" fromto="0 0 0 0.3 0 0" mass="1"/></body>
  </worldbody>
  <actuator>
    <position name="servo" joint="hinge" kp="40" kv="2"/>
    <velocity name="vel" joint="hinge" kv="3"/>
    <motor name="motor" joint="hinge" gear="5"/>  <!-- gainprm[0] = 1; gear is separate -->
  </actuator>
</mujoco>
"""


class ServoEnv(gym.Env):
    """A one-link MuJoCo arm with position, velocity and motor actuators (real physics)."""

    def __init__(self) -> None:
        self.model = mujoco.MjModel.from_xml_string(POSITION_XML)
        self.data = mujoco.MjData(self.model)
        self.action_space = spaces.Box(-1, 1, (3,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        return np.array([self.data.qpos[0], self.data.qvel[0]]), {}

    def step(self, action):
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=5)
        return np.array([self.data.qpos[0], self.data.qvel[0]]), 0.0, False, False, {}


def test_servo_gains_scale_bias_consistently():
    env = DomainRandomization(ServoEnv(), DRConfig(enabled=True, gain_scale=(0.5, 2.0)), seed=0)
    env.reset(seed=0)
    m = env.unwrapped.model
    s = env.params[[env.param_names.index(f"gain_scale/{n}") for n in ("servo", "vel", "motor")]]
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], [40 * s[0], 3 * s[1], 1 * s[2]], rtol=1e-6)
    assert m.actuator_biasprm[0, 1] == -m.actuator_gainprm[0, 0]  # position: kp in gain and bias
    assert m.actuator_biasprm[0, 2] == -2.0  # its kv is not a gain
    assert m.actuator_biasprm[1, 2] == -m.actuator_gainprm[1, 0]  # velocity servo
    assert env.param_names[:1] == ["mass_scale/link"] and "damping_scale/hinge" in env.param_names


def test_non_mujoco_env_is_usage_error():
    with pytest.raises(UsageError, match="Pendulum-v1 does not expose unwrapped.model"):
        DomainRandomization(make_env("Pendulum-v1"), FULL)


def test_config_validation():
    with pytest.raises(ConfigError, match="dr.mass_scale"):
        C.build(EnvConfig, {"dr": {"mass_scale": [1.2, 0.8]}})
    with pytest.raises(ConfigError, match="dr.push_prob"):
        C.build(EnvConfig, {"dr": {"push_prob": 1.5}})
    with pytest.raises(ConfigError, match="dr.latency_steps"):
        C.build(EnvConfig, {"dr": {"latency_steps": [-1, 2]}})
    cfg = C.build(EnvConfig, {"id": "HalfCheetah-v5", "dr": {"enabled": True}})
    assert find_wrapper(build_env(cfg, seed=0), DomainRandomization) is not None
    assert find_wrapper(build_env(cfg, seed=0, eval=True), DomainRandomization) is None
    at_eval = dataclasses.replace(cfg, dr=dataclasses.replace(cfg.dr, at_eval=True))
    assert find_wrapper(build_env(at_eval, seed=0, eval=True), DomainRandomization) is not None


def test_log_uniform_scales_are_uniform_in_log_and_applied():
    """scale_distribution=log_uniform: log(scale) is uniform in [log lo, log hi] (x0.5 as likely as x2),
    within bounds, applied to the model, reproducible by seed; uniform stays the default."""
    assert DRConfig().scale_distribution == "uniform"
    cfg = DRConfig(enabled=True, per_element=False, mass_scale=(0.5, 2.0), friction_scale=(0.5, 2.0),
                   scale_distribution="log_uniform")
    env = DomainRandomization(make_env("HalfCheetah-v5"), cfg, seed=0)
    idx = {n: i for i, n in enumerate(env.param_names)}
    nominal = env.nominal()
    mass = []
    for e in range(600):
        _, info = env.reset(seed=3 if e == 0 else None)
        mass.append(float(info["dr_params"][idx["mass_scale"]]))
        if e == 0:
            first = info["dr_params"].copy()
            np.testing.assert_allclose(env.unwrapped.model.body_mass, nominal["body_mass"] * mass[0], rtol=1e-6)
    mass = np.array(mass)
    assert mass.min() >= 0.5 and mass.max() <= 2.0
    # Uniform in log: median ~1 (linear-uniform over [0.5, 2] has median 1.25), equal mass below x0.7071 and above x1.414.
    assert abs(np.median(mass) - 1.0) < 0.1
    lo, hi = (mass < 2 ** -0.5).mean(), (mass > 2 ** 0.5).mean()
    assert abs(lo - 0.25) < 0.06 and abs(hi - 0.25) < 0.06
    _, info = env.reset(seed=3)
    np.testing.assert_array_equal(info["dr_params"], first)
    env.close()
    with pytest.raises(ConfigError, match="dr.scale_distribution"):
        C.build(EnvConfig, {"dr": {"scale_distribution": "gaussian"}})
