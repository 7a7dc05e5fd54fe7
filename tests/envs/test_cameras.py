"""Images as observations: arm-task cameras and obs modes, privileged keys, dm_control from_pixels.

Tests that render take the ``gl`` fixture (tests/envs/conftest.py), which skips them with the
reason where no OpenGL backend works.
"""
from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import roborl  # noqa: F401  (registers the ids)
from roborl.config import build
from roborl.envs.arm.base import OBS_MODES
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.dr import DomainRandomization, DRConfig
from roborl.envs.registry import TASKS
from roborl.envs.spaces import leaves, privileged_keys, resolve_camera, strip_privileged, strip_privileged_space
from roborl.errors import UsageError

IDS = list(TASKS)
GOAL_IDS = ["roborl/Reach-v0", "roborl/Push-v0", "roborl/PickPlace-v0"]
PIXEL_MODES = ("pixels", "state+pixels", "proprio+pixels")
# What must never reach a blind robot: object and goal coordinates.
PRIVILEGED = {"goal", "goal_minus_ee", "object_pos", "object_minus_ee", "object_vel", "goal_minus_object",
              "peg_tip", "peg_tip_minus_ee", "peg_axis", "goal_minus_peg_tip"}


def _raw(env_id: str, **kw):
    return gym.make(env_id, safety=False, **kw).unwrapped


def _expected_space(u, mode: str) -> dict[str, tuple]:
    """leaf name -> (shape, dtype) that ``mode`` must give (the documented convention)."""
    p = 7 + u.yaw
    s = u._obs_dim
    img = ((u.image_size, u.image_size, 3), np.uint8)
    cams = {f"pixels/{c}": img for c in u.cameras}
    return {
        "state": {"": ((s,), np.float32)},
        "proprio": {"proprio": ((p,), np.float32)},
        "pixels": cams,
        "proprio+pixels": {"proprio": ((p,), np.float32), **cams},
        "state+pixels": {"proprio": ((p,), np.float32), "environment_state": ((s - p,), np.float32), **cams},
    }[mode]


# ----------------------------------------------------------------------------- spaces (no rendering)

@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("mode", OBS_MODES)
def test_observation_space_of_each_mode(env_id, mode):
    u = _raw(env_id, obs_mode=mode, yaw=env_id.endswith("Push-v0"))
    got = {lf.name: (lf.shape, lf.dtype) for lf in leaves(u.observation_space)}
    assert got == _expected_space(u, mode)
    kinds = {lf.name: lf.kind for lf in leaves(u.observation_space)}
    assert all((k == "image") == n.startswith("pixels/") for n, k in kinds.items())
    if mode == "state":
        assert isinstance(u.observation_space, gym.spaces.Box)  # HER, experts and the default recipe need it
    else:
        assert isinstance(u.observation_space, gym.spaces.Dict)
    u.close()


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("mode", ("state", "proprio"))
def test_env_checker_without_images(env_id, mode):
    env = gym.make(env_id, obs_mode=mode)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_proprio_layout_is_the_robots_own_state(env_id):
    u = _raw(env_id, obs_mode="proprio", yaw=True)
    assert [n for n, _ in u.proprio_layout] == ["ee_pos", "ee_vel", "gripper_opening", "ee_yaw"]
    assert set(u.privileged_state_names) == {n for n, _ in u.obs_names} - {"ee_pos", "ee_vel", "gripper_opening"}
    assert set(u.privileged_state_names) <= PRIVILEGED and not {n for n, _ in u.proprio_layout} & PRIVILEGED
    assert u.privileged_obs_keys == ("environment_state",) and u.privileged_info_keys == ("privileged_state",)
    obs, info = u.reset(seed=0)
    # proprio = the robot's parts of the full state vector: ee_pos, ee_vel, gripper opening ... ee_yaw (last)
    state = info["privileged_state"]
    np.testing.assert_array_equal(obs["proprio"], np.concatenate([state[:7], state[-1:]]))
    u.close()


@pytest.mark.parametrize("env_id", IDS)
def test_proprio_carries_no_object_or_goal_coordinates(env_id):
    """Moving the object and the goal changes the state observation but not the proprio one."""
    u = _raw(env_id, obs_mode="proprio")
    obs, info = u.reset(seed=0)
    before_p, before_s = obs["proprio"].copy(), info["privileged_state"].copy()
    if u._obj_qpos >= 0 and env_id != "roborl/PegInsert-v0":  # the peg sits in the hand
        u._set_object_pose(np.array([0.60, -0.20, 0.02]))
    u._goal = u._goal + np.array([0.05, -0.07, 0.03])
    mujoco.mj_forward(u.model, u.data)
    after_p, after_s = u._obs()["proprio"], u._info(False)["privileged_state"]
    np.testing.assert_array_equal(after_p, before_p)
    assert not np.array_equal(after_s, before_s)
    # and nothing of the task (goal/object) is in proprio: each reset draws a new goal, the arm starts at home
    if env_id != "roborl/PegInsert-v0":  # (PegInsert's grasp height is jittered per reset)
        for seed in (1, 2):
            obs, info = u.reset(seed=seed)
            np.testing.assert_array_equal(obs["proprio"], before_p)
            assert not np.array_equal(info["privileged_state"], before_s)
    u.close()


def test_state_mode_info_is_unchanged():
    env = gym.make("roborl/Push-v0")
    _, info = env.reset(seed=0)
    assert "privileged_state" not in info and set(info) >= {"is_success", "ee_pos"}
    env.close()


def test_privileged_keys_and_strip():
    u = _raw("roborl/Push-v0", obs_mode="proprio")
    obs_keys, info_keys = privileged_keys(u)
    assert obs_keys == ("environment_state",) and info_keys == ("privileged_state", "dr_params")
    obs = {"proprio": np.zeros(7), "environment_state": np.ones(15), "pixels": {"front": np.zeros((4, 4, 3))}}
    info = {"is_success": True, "privileged_state": np.ones(22), "dr_params": np.ones(3), "ee_pos": np.zeros(3)}
    o, i = strip_privileged(obs, info, obs_keys, info_keys)
    assert set(o) == {"proprio", "pixels"} and set(i) == {"is_success", "ee_pos"}  # is_success stays: the score
    assert set(obs) == {"proprio", "environment_state", "pixels"}  # inputs untouched
    o, _ = strip_privileged(obs, info, ["pixels/front"], [])
    assert o["pixels"] == {} and "front" in obs["pixels"]
    sp = _raw("roborl/Push-v0", obs_mode="state+pixels").observation_space
    assert set(strip_privileged_space(sp, obs_keys).spaces) == {"proprio", "pixels"}
    u.close()


def test_wrist_camera_moves_with_the_gripper_and_front_is_fixed():
    u = _raw("roborl/Push-v0", obs_mode="proprio")
    u.reset(seed=0)
    front, wrist = u.model.camera("front").id, u.model.camera("robot/wrist").id
    assert u.model.cam_bodyid[front] == 0  # the world body
    f0, w0, ee0 = u.data.cam_xpos[front].copy(), u.data.cam_xpos[wrist].copy(), u.ee_pos
    for _ in range(4):
        u.step(np.array([1.0, 0.5, -0.5, 1.0], np.float32))
    moved = u.ee_pos - ee0
    assert np.linalg.norm(moved) > 0.05
    np.testing.assert_array_equal(u.data.cam_xpos[front], f0)
    np.testing.assert_allclose(u.data.cam_xpos[wrist] - w0, moved, atol=0.01)  # the tool does not turn
    # it looks along the approach axis (down, at home): camera -z points mostly down
    assert u.data.cam_xmat[wrist].reshape(3, 3)[:, 2][2] > 0.7
    u.close()


def test_camera_kwargs_are_checked_in_one_line():
    with pytest.raises(UsageError) as e:
        gym.make("roborl/Push-v0", obs_mode="proprio+pixels", cameras=("front", "side"))
    msg = str(e.value)
    assert "\n" not in msg and "'side'" in msg and "front" in msg and "wrist" in msg and "top" in msg
    for kw in ({"cameras": ()}, {"cameras": ("front", "front")}, {"image_size": 4}, {"image_size": 1000},
               {"image_size": 64.5}, {"camera": "nope"}):
        with pytest.raises(UsageError) as e:
            gym.make("roborl/Push-v0", obs_mode="pixels", **kw)
        assert "\n" not in str(e.value)


def test_goal_markers_are_visual_only():
    for env_id in GOAL_IDS:
        u = _raw(env_id)
        g = u.model.geom("goal_marker")
        assert g.contype[0] == 0 and g.conaffinity[0] == 0
        assert u.model.body_mocapid[g.bodyid[0]] >= 0  # moved at reset
        u.close()


# ----------------------------------------------------------------------------- rendering

@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("mode", PIXEL_MODES)
def test_env_checker_with_images(gl, env_id, mode):
    env = gym.make(env_id, obs_mode=mode, image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for cam in ("front", "wrist"):
        img = obs["pixels"][cam]
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5  # not blank
    assert "privileged_state" in info and isinstance(info["is_success"], bool)
    env.close()


def _green(img: np.ndarray) -> np.ndarray:
    """Pixels of the green goal marker (the only green thing in our scenes)."""
    x = img.astype(int)
    return (x[..., 1] > x[..., 0] + 40) & (x[..., 1] > x[..., 2] + 40)


@pytest.mark.parametrize("env_id", GOAL_IDS)
def test_goal_marker_is_in_the_front_image_and_moves_with_the_goal(gl, env_id):
    u = _raw(env_id, obs_mode="proprio+pixels", cameras=("front",))
    obs, _ = u.reset(seed=0)
    a = obs["pixels"]["front"]
    assert _green(a).sum() >= 2, "goal marker not visible at 64x64"
    mocap = u.model.body_mocapid[u.model.body("goal").id]
    u.data.mocap_pos[mocap] = u.data.mocap_pos[mocap] + np.array([-0.08, 0.12, 0.0])
    mujoco.mj_forward(u.model, u.data)
    b = u.render_cameras()["front"]
    assert not np.array_equal(a, b)
    ya, xa = np.argwhere(_green(a)).mean(0)
    yb, xb = np.argwhere(_green(b)).mean(0)
    assert abs(xb - xa) > 3  # +y in the world is to the image's right in the front camera
    u.close()


def test_object_and_gripper_are_in_both_images(gl):
    u = _raw("roborl/Push-v0", obs_mode="pixels", image_size=64)
    obs, _ = u.reset(seed=0)
    for cam in ("front", "wrist"):
        x = obs["pixels"][cam].astype(int)
        red = (x[..., 0] > x[..., 1] + 60) & (x[..., 0] > x[..., 2] + 60)  # the red cube
        dark = x.max(-1) < 40  # the dark gripper fingers and palm
        assert red.sum() >= 4 and dark.sum() >= 4, cam
    u.close()


def test_wrist_image_changes_when_the_gripper_moves(gl):
    u = _raw("roborl/Push-v0", obs_mode="proprio+pixels", image_size=32)
    obs, _ = u.reset(seed=0)
    for _ in range(3):
        nxt, *_ = u.step(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
    assert not np.array_equal(obs["pixels"]["wrist"], nxt["pixels"]["wrist"])
    u.close()


def test_dr_observation_noise_leaves_images_alone(gl):
    env = gym.make("roborl/Push-v0", obs_mode="proprio+pixels", image_size=32)
    clean, _ = env.reset(seed=0)
    dr = DomainRandomization(env, build(DRConfig, {"enabled": True, "obs_noise_std": [0.05, 0.05]}, "test"), seed=0)
    obs, _ = dr.reset(seed=0)
    assert not np.array_equal(obs["proprio"], clean["proprio"])
    np.testing.assert_array_equal(obs["pixels"]["front"], clean["pixels"]["front"])
    assert obs["pixels"]["wrist"].dtype == np.uint8
    dr.close()


def test_build_env_full_stack_with_images(gl):
    cfg = build(EnvConfig, {"id": "roborl/Push-v0", "kwargs": {"obs_mode": "proprio+pixels", "image_size": 32},
                            "normalize_obs": True, "terminate_on_success": True,
                            "dr": {"enabled": True, "obs_noise_std": [0.0, 0.01], "action_noise_std": [0.0, 0.05]}},
                "test")
    env = build_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    assert obs["pixels"]["front"].dtype == np.uint8 and obs["proprio"].dtype == np.float32
    assert resolve_camera(env.observation_space, "wrist") == "pixels/wrist"
    env.close()


def test_render_uses_its_own_camera_and_size(gl):
    env = gym.make("roborl/Push-v0", obs_mode="proprio+pixels", render_mode="rgb_array", camera="top")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and obs["pixels"]["front"].shape == (64, 64, 3)
    # a second renderer in the process must leave the first one's frames intact (see _safe_close)
    other = gym.make("roborl/Reach-v0", obs_mode="pixels")
    other.reset(seed=0)
    other.close()
    np.testing.assert_array_equal(env.unwrapped.render_cameras()["front"], obs["pixels"]["front"])
    env.close()


# ----------------------------------------------------------------------------- dm_control

def test_dmc_from_pixels_spaces(gl):
    from roborl.envs.dmc import make_dmc_env

    env = make_dmc_env("dmc:cartpole-swingup", from_pixels=True, height=48, width=64)
    assert set(env.observation_space.spaces) == {"pixels"}
    (cam,) = env.observation_space["pixels"].spaces
    assert env.observation_space["pixels"][cam].shape == (48, 64, 3)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["pixels"][cam].dtype == np.uint8 and obs["pixels"][cam].std() > 0
    assert info["privileged_state"].shape == (5,) and privileged_keys(env)[1][0] == "privileged_state"
    env.close()
    env = make_dmc_env("dmc:cartpole-swingup", from_pixels=True, proprio=True, camera_id=1)
    assert {lf.name for lf in leaves(env.observation_space)} == {"proprio", f"pixels/{env.camera_name}"}
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs["proprio"], info["privileged_state"])
    env.close()


def test_dmc_pixel_kwargs_through_env_config(gl):
    cfg = build(EnvConfig, {"id": "dmc:reacher-easy", "kwargs": {"from_pixels": True, "height": 32, "width": 32}},
                "test")
    env = build_env(cfg, seed=0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def test_dmc_pixel_kwargs_are_checked():
    from roborl.envs.dmc import make_dmc_env

    for kw in ({"proprio": True}, {"from_pixels": True, "height": 2}, {"from_pixels": True, "camera_id": 99}):
        with pytest.raises(UsageError) as e:
            make_dmc_env("dmc:cartpole-swingup", **kw)
        assert "\n" not in str(e.value)


def test_antialias_off_renders_the_same_scene(gl):
    on = _raw("roborl/Push-v0", obs_mode="pixels", image_size=32)
    off = _raw("roborl/Push-v0", obs_mode="pixels", image_size=32, antialias=False)
    a, _ = on.reset(seed=0)
    b, _ = off.reset(seed=0)
    for cam in ("front", "wrist"):
        x, y = a["pixels"][cam].astype(int), b["pixels"][cam].astype(int)
        assert not np.array_equal(x, y) and np.abs(x - y).mean() < 10  # edges differ, the scene does not
    on.close()
    off.close()


def test_no_gl_backend_is_one_line(tmp_path):
    """mujoco imported first with no MUJOCO_GL and no display: GLFW cannot start; a pixel env says so in one line."""
    import os
    import subprocess
    import sys

    code = ("import mujoco, gymnasium as gym, roborl\n"
            "from roborl.errors import UsageError\n"
            "env = gym.make('roborl/Push-v0', obs_mode='pixels')\n"
            "try:\n"
            "    env.reset(seed=0)\n"
            "    print('RENDERED')\n"
            "except UsageError as e:\n"
            "    print('USAGE', e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    if "RENDERED" in p.stdout:
        pytest.skip("GLFW renders here (a display or a GLFW that works headless)")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("USAGE")]
    assert len(lines) == 1 and "MUJOCO_GL=osmesa" in lines[0], (p.stdout, p.stderr)


def test_robots_get_a_wrist_camera_unless_they_bring_one(tmp_path):
    from pathlib import Path

    from roborl.envs.arm.robot import asset_path

    xml = Path(asset_path("arm.xml")).read_text()
    arm = dict(ee_site="ee", arm_joints=["j1", "j2", "j3", "j4", "j5", "j6"], gripper_actuator="gripper",
               finger_joints=["finger_l", "finger_r"])
    plain = tmp_path / "plain.xml"
    plain.write_text(xml)
    a = _raw("roborl/Push-v0", robot_xml=str(plain), obs_mode="proprio", **arm)
    b = _raw("roborl/Push-v0", obs_mode="proprio")
    ca, cb = a.model.camera("robot/wrist"), b.model.camera("robot/wrist")
    np.testing.assert_allclose(ca.pos, cb.pos)
    np.testing.assert_allclose(ca.quat, cb.quat)
    own = tmp_path / "own.xml"  # a robot with its own wrist camera: kept, not replaced
    own.write_text(xml.replace('<site name="ee"', '<camera name="wrist" pos="0.01 0 0" fovy="60"/>\n<site name="ee"'))
    c = _raw("roborl/Push-v0", robot_xml=str(own), obs_mode="proprio", **arm)
    assert c.model.camera("robot/wrist").fovy[0] == 60.0
    assert sum(c.model.camera(i).name.endswith("wrist") for i in range(c.model.ncam)) == 1
    for u in (a, b, c):
        u.close()


def test_history_wrapper_refuses_dict_observations_in_one_line():
    from roborl.envs.wrappers import HistoryObservation

    env = gym.make("roborl/Push-v0", obs_mode="proprio")
    with pytest.raises(UsageError) as e:
        HistoryObservation(env, actions=1)
    assert "\n" not in str(e.value) and "flat float Box" in str(e.value)
    env.close()
