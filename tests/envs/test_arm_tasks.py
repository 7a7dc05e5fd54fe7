"""Our arm tasks: registry, env checker, random rollouts, controller, seeding, options."""
from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import roborl  # noqa: F401  (registers the ids)
from roborl.envs.registry import MAX_EPISODE_STEPS, TASKS, register_all
from roborl.envs.safety import SafetyLayer
from roborl.envs.wrappers import find_wrapper
from roborl.errors import UsageError

IDS = list(TASKS)


def test_registry_table_and_idempotent_registration():
    assert IDS == ["roborl/Reach-v0", "roborl/Push-v0", "roborl/PickPlace-v0", "roborl/PegInsert-v0"]
    register_all()  # a second call must not raise or re-register
    for env_id in IDS:
        assert gym.spec(env_id).max_episode_steps == MAX_EPISODE_STEPS[env_id]


@pytest.mark.parametrize("env_id", IDS)
def test_reset_then_100_random_steps_no_nan(env_id):
    env = gym.make(env_id)
    assert find_wrapper(env, SafetyLayer) is not None, "gym.make must apply the safety layer"
    env.action_space.seed(0)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    steps, truncations = 0, 0
    for _ in range(100):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert np.all(np.isfinite(obs)) and np.isfinite(reward)
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        assert isinstance(info["is_success"], bool)
        assert info["ee_pos"].shape == (3,) and np.all(np.isfinite(info["ee_pos"]))
        if terminated or truncated:
            truncations += truncated
            assert steps == MAX_EPISODE_STEPS[env_id]  # only the time limit ends an episode
            steps = 0
            env.reset()
    assert truncations >= 1
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()



@pytest.mark.parametrize("env_id", IDS)
def test_public_attributes_for_other_components(env_id):
    u = gym.make(env_id).unwrapped
    assert isinstance(u.model, mujoco.MjModel) and isinstance(u.data, mujoco.MjData)
    low, high = u.workspace_bounds
    assert low.shape == high.shape == (3,) and np.all(low < high)
    u.reset(seed=1)
    assert u.ee_pos.shape == (3,) and np.all(low <= u.ee_pos) and np.all(u.ee_pos <= high)
    assert u.max_delta == pytest.approx(0.03)
    assert u.control_dt == pytest.approx(0.1)
    assert u.arm_jacobian().shape == (3, 6) and u.joint_vel_limits.shape == (6,)
    assert u.action_space.shape == (4,) and u.action_space.dtype == np.float32


def test_seeding_is_reproducible_and_randomizes_poses():
    env = gym.make("roborl/Push-v0")
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    c, _ = env.reset(seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[7:10], c[7:10])  # object position differs
    objs, goals = [], []
    for s in range(20):
        o, _ = env.reset(seed=s)
        objs.append(o[7:10])
        goals.append(o[16:19])
        assert np.linalg.norm(o[16:18] - o[7:9]) >= 0.1 - 1e-6  # goal not trivially close
    assert np.ptp(np.array(objs)[:, :2], axis=0).min() > 0.05


def test_controller_tracks_delta_and_respects_joint_limits():
    env = gym.make("roborl/Reach-v0", safety=False)
    u = env.unwrapped
    u.reset(seed=0)
    for axis in range(3):
        sign = -1.0 if axis == 2 else 1.0
        before = u.ee_pos
        a = np.zeros(4, dtype=np.float32)
        a[axis] = sign
        u.step(a)
        moved = u.ee_pos - before
        assert moved[axis] * sign == pytest.approx(0.03, rel=0.15)
        assert np.abs(np.delete(moved, axis)).max() < 0.005
    rng = np.random.default_rng(0)
    rngs = u.model.jnt_range[[u.model.joint(f"robot/j{i}").id for i in range(1, 7)]]
    for _ in range(150):
        u.step(rng.uniform(-1, 1, 4).astype(np.float32))
        q = u.data.qpos[u._r.arm_qpos]
        assert np.all(q >= rngs[:, 0] - 0.02) and np.all(q <= rngs[:, 1] + 0.02)


def test_gripper_command_opens_and_closes():
    u = gym.make("roborl/Reach-v0", safety=False).unwrapped
    u.reset(seed=0)
    for _ in range(3):
        u.step(np.array([0, 0, 0, -1], dtype=np.float32))
    closed = u.gripper_opening
    for _ in range(3):
        u.step(np.array([0, 0, 0, 1], dtype=np.float32))
    assert closed < 0.005 and u.gripper_opening > 0.08


def test_yaw_option_adds_an_action_and_turns_the_tool():
    env = gym.make("roborl/Push-v0", yaw=True)
    assert env.action_space.shape == (5,) and env.observation_space.shape == (23,)
    env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(np.array([0, 0, 0, 1, 1], dtype=np.float32))
    assert obs[-1] == pytest.approx(0.6, abs=0.05)  # 3 x max_dyaw (0.2 rad), world-frame yaw


@pytest.mark.parametrize("env_id", IDS)
def test_sparse_reward(env_id):
    env = gym.make(env_id, reward_type="sparse")
    env.reset(seed=0)
    for _ in range(5):
        _, r, _, _, info = env.step(env.action_space.sample())
        assert r == (0.0 if info["is_success"] else -1.0)


def test_bad_kwargs_raise_usage_errors():
    for kwargs in ({"reward_type": "shaped"}, {"obs_mode": "rgb"}, {"control_hz": 50}, {"max_delta": 1.0},
                   {"ee_site": "ee"}):
        with pytest.raises(UsageError):
            gym.make("roborl/Push-v0", **kwargs)


def test_pixel_observations(tmp_path, gl_in_process):
    env = gym.make("roborl/Push-v0", obs_mode="state+pixels", image_size=32, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert obs["state"].shape == (22,) and obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert obs["image"].std() > 0  # not a blank frame
    frame = env.render()
    assert frame.shape == (240, 320, 3)
    env.close()
