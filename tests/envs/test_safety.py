"""SafetyLayer: clip, NaN hold, workspace box, motion and joint-velocity limits, counters."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import roborl  # noqa: F401
from roborl.config import ConfigError, build
from roborl.envs.safety import SafetyConfig, SafetyLayer
from roborl.envs.wrappers import find_wrapper
from roborl.errors import UsageError

TOL = 0.01  # stated tolerance: the end effector may overshoot the box / the step limit by 1 cm


def arm(**safety):
    return gym.make("roborl/Push-v0", safety=SafetyConfig(**safety) if safety else None)


def test_nonfinite_action_holds_position_and_is_counted():
    env = arm()
    env.reset(seed=0)
    env.step(np.array([0, 0, 0, -1], dtype=np.float32))  # gripper closed
    ee = env.unwrapped.ee_pos
    _, _, _, _, info = env.step(np.array([np.nan, 0.5, np.inf, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(info["executed_action"], np.array([0, 0, 0, -1], dtype=np.float32))
    assert info["executed_action"].dtype == np.float32
    assert info["safety"]["nonfinite"] == 1
    assert np.linalg.norm(env.unwrapped.ee_pos - ee) < 0.003
    _, _, _, _, info = env.step(np.array([0, 0, 0, -np.inf], dtype=np.float32))
    assert info["safety_episode"]["nonfinite"] == 2
    env.reset(seed=1)
    _, _, _, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert info["safety_episode"]["nonfinite"] == 0  # totals restart each episode


def test_clip_and_motion_limit():
    env = arm()
    env.reset(seed=0)
    ee = env.unwrapped.ee_pos
    _, _, _, _, info = env.step(np.array([5.0, 5.0, -5.0, 3.0], dtype=np.float32))
    assert info["safety"]["clipped"] == 1 and info["safety"]["motion"] == 1
    ex = info["executed_action"]
    assert np.all(np.abs(ex) <= 1.0) and ex[-1] == 1.0
    assert np.linalg.norm(ex[:3]) * 0.03 == pytest.approx(0.03, rel=1e-5)  # scaled to max_step
    assert np.linalg.norm(env.unwrapped.ee_pos - ee) <= 0.03 + TOL


def test_workspace_box_projects_the_target():
    env = arm()
    env.reset(seed=0)
    low, high = env.unwrapped.workspace_bounds
    events = 0
    for _ in range(40):  # drive down into the table and out to +y
        _, _, _, _, info = env.step(np.array([0, 1, -1, -1], dtype=np.float32))
        events += info["safety"]["workspace"]
        ee = env.unwrapped.ee_pos
        assert np.all(ee >= low - TOL) and np.all(ee <= high + TOL)
    assert events > 0 and info["safety"]["outside"] == 0
    assert ee[1] == pytest.approx(high[1], abs=TOL) and ee[2] == pytest.approx(low[2], abs=TOL)


def test_margin_and_disabled_layer():
    env = arm(workspace_margin=0.05)
    env.reset(seed=0)
    for _ in range(30):
        env.step(np.array([0, 0, -1, 1], dtype=np.float32))
    assert env.unwrapped.ee_pos[2] == pytest.approx(env.unwrapped.workspace_bounds[0][2] + 0.05, abs=TOL)
    raw = gym.make("roborl/Push-v0", safety={"enabled": False})
    assert find_wrapper(raw, SafetyLayer) is None
    raw = gym.make("roborl/Push-v0", safety=False)
    assert find_wrapper(raw, SafetyLayer) is None



def test_joint_velocity_limit_scales_the_delta_down():
    env = arm(joint_vel_scale=0.05)  # 5% of 2 rad/s: 0.1 rad/s, far below what 3 cm/step needs
    env.reset(seed=0)
    ee = env.unwrapped.ee_pos
    _, _, _, _, info = env.step(np.array([1, 0, 0, 1], dtype=np.float32))
    assert info["safety"]["joint_vel"] == 1
    assert 0 < info["executed_action"][0] < 0.5
    assert np.linalg.norm(env.unwrapped.ee_pos - ee) < 0.015


def test_action_bounds_override_and_config_errors():
    env = arm(action_low=(-0.5, -0.5, -0.5, -1.0), action_high=(0.5, 0.5, 0.5, 1.0))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1, -1, 0, 0], dtype=np.float32))
    assert info["executed_action"][0] == 0.5 and info["executed_action"][1] == -0.5
    with pytest.raises(UsageError, match="action_low"):
        arm(action_low=(-1.0,), action_high=(1.0,))
    with pytest.raises(ConfigError, match="max_step"):
        build(SafetyConfig, {"max_step": -0.1}, "test.yaml")
    with pytest.raises(ConfigError, match="together"):
        build(SafetyConfig, {"action_low": [-1, -1]}, "test.yaml")
    with pytest.raises(ConfigError, match="did you mean"):
        build(SafetyConfig, {"max_stp": 0.1}, "test.yaml")


def test_generic_parts_work_on_a_non_arm_env():
    env = SafetyLayer(gym.make("Pendulum-v1"))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([np.nan], dtype=np.float32))
    assert info["executed_action"][0] == 0.0 and info["safety"]["nonfinite"] == 1
    _, _, _, _, info = env.step(np.array([100.0], dtype=np.float32))
    assert info["executed_action"][0] == 2.0 and info["safety"]["clipped"] == 1
    assert info["safety"]["workspace"] == 0


_PROP_ENV = None


def _prop_env():
    global _PROP_ENV
    if _PROP_ENV is None:
        _PROP_ENV = gym.make("roborl/PickPlace-v0")
    return _PROP_ENV


wild = st.one_of(
    st.floats(-1.0, 1.0),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([1e30, -1e30, np.nan, np.inf, -np.inf, 1.0, -1.0]),
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), actions=st.lists(st.lists(wild, min_size=4, max_size=4), min_size=1, max_size=12))
def test_property_end_effector_stays_in_box_and_steps_are_bounded(seed, actions):
    env = _prop_env()
    env.reset(seed=seed)
    u = env.unwrapped
    low, high = u.workspace_bounds
    max_step = SafetyConfig().max_step
    for a in actions:
        before = u.ee_pos
        _, _, _, _, info = env.step(np.array(a, dtype=np.float32))
        ee = u.ee_pos
        assert np.all(np.isfinite(ee))
        assert np.all(ee >= low - TOL) and np.all(ee <= high + TOL)
        assert np.linalg.norm(ee - before) <= max_step + TOL
        ex = info["executed_action"]
        assert np.all(np.isfinite(ex)) and np.all(np.abs(ex) <= 1.0)
