"""Bring your own robot: the tasks built on a user-supplied MJCF arm."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import roborl
from roborl.envs.arm.robot import asset_path
from roborl.errors import UsageError

OUR_ARM = dict(robot_xml=asset_path("arm.xml"), ee_site="ee", arm_joints=["j1", "j2", "j3", "j4", "j5", "j6"],
               gripper_actuator="gripper", finger_joints=["finger_l", "finger_r"])


def test_our_arm_through_the_byo_path_behaves_like_the_default():
    # No home_qpos given: the BYO path solves IK for the home pose itself.
    default = gym.make("roborl/Push-v0")
    byo = gym.make("roborl/Push-v0", **OUR_ARM)
    np.testing.assert_allclose(byo.unwrapped._r.home_qpos, default.unwrapped._r.home_qpos, atol=1e-4)
    a, _ = default.reset(seed=3)
    b, _ = byo.reset(seed=3)
    np.testing.assert_allclose(a, b, atol=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(15):
        act = rng.uniform(-1, 1, 4).astype(np.float32)
        a, ra, *_ = default.step(act)
        b, rb, *_ = byo.step(act)
    np.testing.assert_allclose(a, b, atol=5e-3)
    assert ra == pytest.approx(rb, abs=5e-3)


def _renamed_arm(tmp_path: Path) -> Path:
    """Our arm with other names, plus a joint actuator on the base joint that the builder must drop."""
    xml = Path(asset_path("arm.xml")).read_text()
    for old, new in [('"ee"', '"tool0"'), ('"j1"', '"pan"'), ('"j2"', '"lift"'), ('"j3"', '"elbow"'),
                     ('"j4"', '"w1"'), ('"j5"', '"w2"'), ('"j6"', '"w3"'), ('"gripper"', '"hand_act"')]:
        xml = xml.replace(old, new)
    xml = xml.replace("<actuator>", '<actuator>\n    <position name="pan_servo" joint="pan" kp="50"/>')
    path = tmp_path / "my_arm.xml"
    path.write_text(xml)
    return path


def test_a_user_robot_with_other_names_runs_the_tasks_and_the_expert(tmp_path):
    path = _renamed_arm(tmp_path)
    env = gym.make("roborl/PickPlace-v0", robot_xml=str(path), ee_site="tool0",
                   arm_joints=("pan", "lift", "elbow", "w1", "w2", "w3"), gripper_actuator="hand_act",
                   finger_joints=("finger_l", "finger_r"))
    u = env.unwrapped
    names = [u.model.actuator(i).name for i in range(u.model.nu)]
    assert "robot/pan_servo" not in names and "robot/hand_act" in names
    ex = roborl.envs.expert(env)
    wins = 0
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        ex.reset()
        for _ in range(60):
            obs, _, _, truncated, info = env.step(ex(obs))
            if truncated:
                break
        wins += info["is_success"]
    assert wins == 3


def test_byo_errors_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match="ee_site 'nope'"):
        gym.make("roborl/Reach-v0", **{**OUR_ARM, "ee_site": "nope"})
    with pytest.raises(UsageError, match="joint 'j9'"):
        gym.make("roborl/Reach-v0", **{**OUR_ARM, "arm_joints": ["j1", "j9"]})
    with pytest.raises(UsageError, match="gripper_actuator"):
        gym.make("roborl/Reach-v0", **{**OUR_ARM, "gripper_actuator": "claw"})
    with pytest.raises(UsageError, match="file not found"):
        gym.make("roborl/Reach-v0", **{**OUR_ARM, "robot_xml": str(tmp_path / "missing.xml")})
    with pytest.raises(UsageError, match="needs ee_site"):
        gym.make("roborl/Reach-v0", robot_xml=OUR_ARM["robot_xml"], arm_joints=["j1"], gripper_actuator="gripper")
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody><body></mujoco>")
    with pytest.raises(UsageError, match="cannot parse"):
        gym.make("roborl/Reach-v0", **{**OUR_ARM, "robot_xml": str(bad)})
