"""Our arm tasks: Reach, Push (the default task), PickPlace, PegInsert.

State observation (float32), common prefix for every task (7 values):
    ee_pos [3] (m) | ee_vel [3] (m/s, over the last control step) | gripper_opening [1] (m)
then per task (see ``obs_names``), then ``ee_yaw`` [1] (rad) when ``yaw=True``. The layout is
also documented in docs/tasks.md. Rewards: ``reward_type="dense"`` (default) or ``"sparse"``
(0 on success, else -1). ``info["is_success"]`` and ``info["ee_pos"]`` on every step.

The entry points ``make_<task>(**kwargs)`` are what ``gym.make("roborl/<Task>-v0")`` calls:
they build the raw env and wrap it in :class:`~roborl.envs.safety.SafetyLayer` with the task's
workspace box. Pass ``safety=False`` for the raw env, or ``safety=SafetyConfig(...)``/a dict.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from roborl.config import build
from roborl.envs.arm.base import ArmEnv
from roborl.envs.goals import GoalRelabeler
from roborl.envs.safety import SafetyConfig, SafetyLayer
from roborl.errors import UsageError

CUBE_HALF = 0.02
TABLE_REGION_LOW = np.array([0.35, -0.15])
TABLE_REGION_HIGH = np.array([0.55, 0.15])


def _obs_slice(obs_names: tuple[tuple[str, int], ...], name: str) -> tuple[int, int]:
    """[start, stop) of the named part of the state observation."""
    start = 0
    for n, size in obs_names:
        if n == name:
            return start, start + size
        start += size
    raise KeyError(name)


def _sample_xy(rng: np.random.Generator, low: np.ndarray = TABLE_REGION_LOW,
               high: np.ndarray = TABLE_REGION_HIGH) -> np.ndarray:
    return rng.uniform(low, high)


def _sample_apart(rng: np.random.Generator, ref: np.ndarray, min_dist: float, low: np.ndarray = TABLE_REGION_LOW,
                  high: np.ndarray = TABLE_REGION_HIGH) -> np.ndarray:
    """An xy point in the region at least ``min_dist`` from ``ref`` [2] (rejection sampling)."""
    for _ in range(1000):
        p = rng.uniform(low, high)
        if np.linalg.norm(p - ref) >= min_dist:
            return p
    raise RuntimeError("could not sample a goal far enough from the object")  # region too small: a bug


class ReachEnv(ArmEnv):
    """Move the tool centre point to a goal in free space.

    Task obs (6): goal [3] | goal - ee [3]. Success: distance < ``success_threshold`` (2 cm).
    Dense reward: ``-|goal - ee|`` (m).
    """

    scene_xml = "reach.xml"
    task_name = "reach"
    default_max_steps = 50
    obs_names = (("ee_pos", 3), ("ee_vel", 3), ("gripper_opening", 1), ("goal", 3), ("goal_minus_ee", 3))

    def __init__(self, *, success_threshold: float = 0.02, **kwargs: Any) -> None:
        self.success_threshold = float(success_threshold)
        self._goal = np.array([0.45, 0.1, 0.1])
        super().__init__(**kwargs)
        self._goal_mocap = int(self.model.body_mocapid[self.model.body("goal").id])

    def _task_reset(self, rng: np.random.Generator) -> None:
        ee = self.ee_pos
        for _ in range(1000):
            g = rng.uniform((0.30, -0.20, 0.05), (0.60, 0.20, 0.30))
            if np.linalg.norm(g - ee) >= 0.10:
                break
        self._goal = g
        self.data.mocap_pos[self._goal_mocap] = g

    def _task_obs(self) -> list[np.ndarray]:
        return [self._goal, self._goal - self.ee_pos]

    def _task_eval(self) -> tuple[float, float, bool]:
        d = float(np.linalg.norm(self._goal - self.ee_pos))
        success = d < self.success_threshold
        return -d, 0.0 if success else -1.0, success

    def task_state(self) -> dict[str, Any]:
        return {**super().task_state(), "goal": self._goal.copy()}

    def goal_relabeler(self) -> GoalRelabeler | None:
        """HER relabelling of state observations (roborl.envs.goals): the achieved goal is the tool position."""
        if self.obs_mode != "state":
            return None
        n = self.obs_names
        return GoalRelabeler(achieved=_obs_slice(n, "ee_pos"), goal=_obs_slice(n, "goal"),
                             goal_minus_achieved=_obs_slice(n, "goal_minus_ee"), distance_dims=3,
                             threshold=self.success_threshold, sparse=self.reward_type == "sparse")


class _CubeTask(ArmEnv):
    """Shared by Push and PickPlace: a 4 cm cube (0.1 kg) and a goal marker."""

    obs_names = (("ee_pos", 3), ("ee_vel", 3), ("gripper_opening", 1), ("object_pos", 3),
                 ("object_minus_ee", 3), ("object_vel", 3), ("goal", 3), ("goal_minus_object", 3))

    def __init__(self, *, success_threshold: float = 0.03, **kwargs: Any) -> None:
        self.success_threshold = float(success_threshold)
        self._goal = np.array([0.45, 0.1, CUBE_HALF])
        super().__init__(**kwargs)
        self._goal_mocap = int(self.model.body_mocapid[self.model.body("goal").id])
        self._obj_dof = int(self.model.jnt_dofadr[self.model.joint("object").id])

    @property
    def object_pos(self) -> np.ndarray:
        return self.data.xpos[self._obj_body].copy()

    def _task_obs(self) -> list[np.ndarray]:
        obj = self.object_pos
        vel = self.data.qvel[self._obj_dof:self._obj_dof + 3]
        return [obj, obj - self.ee_pos, vel, self._goal, self._goal - obj]

    def _place(self, rng: np.random.Generator, goal_z: tuple[float, float]) -> None:
        obj_xy = _sample_xy(rng)
        # A cube is symmetric under 90 degree turns, so +-45 degrees covers every yaw.
        self._set_object_pose(np.array([*obj_xy, CUBE_HALF]), yaw=float(rng.uniform(-np.pi / 4, np.pi / 4)))
        goal_xy = _sample_apart(rng, obj_xy, 0.10)
        self._goal = np.array([*goal_xy, rng.uniform(*goal_z)])
        self.data.mocap_pos[self._goal_mocap] = self._goal

    def task_state(self) -> dict[str, Any]:
        return {**super().task_state(), "object": self.object_pos, "goal": self._goal.copy()}

    # Success distance dimensions: 2 = in the table plane (Push), 3 = in space (PickPlace).
    goal_distance_dims: ClassVar[int] = 3
    SHAPING_WEIGHT: ClassVar[float] = 0.5  # dense reward: weight of -|object - ee|
    SUCCESS_BONUS: ClassVar[float] = 0.5   # dense reward: added on success steps

    def goal_relabeler(self) -> GoalRelabeler | None:
        """HER relabelling of state observations (roborl.envs.goals): the achieved goal is the cube position,
        the dense reward's shaping term and success bonus are the ones _task_eval uses."""
        if self.obs_mode != "state":
            return None
        n = self.obs_names
        return GoalRelabeler(achieved=_obs_slice(n, "object_pos"), goal=_obs_slice(n, "goal"),
                             goal_minus_achieved=_obs_slice(n, "goal_minus_object"),
                             distance_dims=self.goal_distance_dims, threshold=self.success_threshold,
                             sparse=self.reward_type == "sparse", shaping=_obs_slice(n, "object_minus_ee"),
                             shaping_weight=self.SHAPING_WEIGHT, success_bonus=self.SUCCESS_BONUS)


class PushEnv(_CubeTask):
    """Push the cube across the table to a goal on the table (the default task for SAC).

    Task obs (15): object_pos [3] | object - ee [3] | object_vel [3] | goal [3] | goal - object [3];
    22 values in all (23 with yaw). The cube starts in x 0.35-0.55 m, y -0.15-0.15 m with a
    random yaw, the goal in the same area at least 10 cm away. Success: cube centre within
    ``success_threshold`` (3 cm) of the goal in the table plane. Dense reward:
    ``-d_xy(object, goal) - 0.5 * |object - ee| + 0.5 * success`` (m).
    """

    scene_xml = "push.xml"
    task_name = "push"
    default_max_steps = 50
    goal_distance_dims = 2

    def _task_reset(self, rng: np.random.Generator) -> None:
        self._place(rng, (CUBE_HALF, CUBE_HALF))

    def _task_eval(self) -> tuple[float, float, bool]:
        obj = self.object_pos
        d_og = float(np.linalg.norm(self._goal[:2] - obj[:2]))
        d_eo = float(np.linalg.norm(obj - self.ee_pos))
        success = d_og < self.success_threshold
        return -d_og - self.SHAPING_WEIGHT * d_eo + self.SUCCESS_BONUS * success, 0.0 if success else -1.0, success


class PickPlaceEnv(_CubeTask):
    """Pick up the cube and hold it at a goal 5-20 cm above the table.

    Task obs as Push. Success: cube centre within ``success_threshold`` (3 cm) of the goal
    (3-D). Dense reward: ``-|object - goal| - 0.5 * |object - ee| + 0.5 * success`` (m).
    """

    scene_xml = "pick_place.xml"
    task_name = "pick_place"
    default_max_steps = 60

    def _task_reset(self, rng: np.random.Generator) -> None:
        self._place(rng, (0.05, 0.20))

    def _task_eval(self) -> tuple[float, float, bool]:
        obj = self.object_pos
        d_og = float(np.linalg.norm(self._goal - obj))
        d_eo = float(np.linalg.norm(obj - self.ee_pos))
        success = d_og < self.success_threshold
        return -d_og - self.SHAPING_WEIGHT * d_eo + self.SUCCESS_BONUS * success, 0.0 if success else -1.0, success


PEG_RADIUS = 0.01
PEG_HALF_LEN = 0.04
HOLE_HALF_WIDTH = 0.01125  # square hole; clearance = 2 * 11.25 mm - 20 mm = 2.5 mm
HOLE_DEPTH = 0.04


class PegInsertEnv(ArmEnv):
    """Insert a round peg (20 mm diameter, 80 mm long) into a square hole with 2.5 mm clearance.

    **The episode starts with the peg already grasped** (fingers closed on it, the tool at
    the home pose, grasp height jittered by +-5 mm), so the task is the insertion itself.
    Task obs (15): peg_tip [3] (bottom centre of the peg) | peg_tip - ee [3] | peg_axis [3]
    (unit vector along the peg) | goal [3] (bottom centre of the hole) | goal - peg_tip [3];
    22 values in all. The hole is placed in x 0.38-0.55 m, y -0.15-0.15 m. Success: peg tip
    within 4 mm of the hole axis and at most 15 mm above the hole bottom (inserted >= 25 mm
    of the 40 mm depth). Dense reward: ``-(2 d_xy + d_z)(tip, goal) + 0.5 * success`` (m).
    """

    scene_xml = "peg_insert.xml"
    task_name = "peg_insert"
    default_max_steps = 60
    obs_names = (("ee_pos", 3), ("ee_vel", 3), ("gripper_opening", 1), ("peg_tip", 3), ("peg_tip_minus_ee", 3),
                 ("peg_axis", 3), ("goal", 3), ("goal_minus_peg_tip", 3))

    def __init__(self, **kwargs: Any) -> None:
        self._goal = np.array([0.45, 0.1, 0.0])
        super().__init__(**kwargs)
        self._hole_mocap = int(self.model.body_mocapid[self.model.body("hole").id])

    @property
    def peg_tip(self) -> np.ndarray:
        axis = self.data.xmat[self._obj_body].reshape(3, 3)[:, 2]
        return self.data.xpos[self._obj_body] - PEG_HALF_LEN * axis

    def _task_reset(self, rng: np.random.Generator) -> None:
        hole_xy = _sample_apart(rng, self.home_tcp[:2], 0.05, np.array([0.38, -0.15]), np.array([0.55, 0.15]))
        self._goal = np.array([*hole_xy, 0.0])
        self.data.mocap_pos[self._hole_mocap] = self._goal
        # Peg in the closed hand: centre 2 cm below the tool centre point (+-5 mm), upright.
        ee = self.ee_pos
        self._set_object_pose(ee + np.array([0.0, 0.0, -0.02 + rng.uniform(-0.005, 0.005)]))
        if len(self._r.finger_qpos):
            self.data.qpos[self._r.finger_qpos] = PEG_RADIUS
        self.grip_command = -1.0
        mujoco.mj_forward(self.model, self.data)
        self._set_targets(ee, self.grip_command)
        self._simulate(3)  # let the grasp settle before the first observation

    def _task_obs(self) -> list[np.ndarray]:
        tip = self.peg_tip
        axis = self.data.xmat[self._obj_body].reshape(3, 3)[:, 2]
        return [tip, tip - self.ee_pos, axis, self._goal, self._goal - tip]

    def _task_eval(self) -> tuple[float, float, bool]:
        tip = self.peg_tip
        d_xy = float(np.linalg.norm(self._goal[:2] - tip[:2]))
        d_z = float(abs(tip[2] - self._goal[2]))
        success = d_xy < 0.004 and tip[2] - self._goal[2] < 0.015
        return -(2.0 * d_xy + d_z) + 0.5 * success, 0.0 if success else -1.0, bool(success)

    def task_state(self) -> dict[str, Any]:
        """Adds ``axis`` [3], the peg's unit axis (tip to top): the scripted expert needs it to re-grasp."""
        axis = self.data.xmat[self._obj_body].reshape(3, 3)[:, 2].copy()
        return {**super().task_state(), "object": self.peg_tip, "goal": self._goal.copy(), "axis": axis}


# Base obs names are part of each task's obs_names so that the documented layout is complete.
for _cls in (ReachEnv, PushEnv, PickPlaceEnv, PegInsertEnv):
    assert _cls.obs_names[:3] == (("ee_pos", 3), ("ee_vel", 3), ("gripper_opening", 1))


def _wrap(env: ArmEnv, safety: Any) -> gym.Env:
    if safety is False:
        return env
    if safety is None or safety is True:
        cfg = SafetyConfig()
    elif isinstance(safety, SafetyConfig):
        cfg = safety
    elif isinstance(safety, dict):
        cfg = build(SafetyConfig, safety, "env kwargs 'safety'")
    else:
        raise UsageError(f"safety: expected a SafetyConfig, a mapping or False, got {type(safety).__name__}")
    if not cfg.enabled:
        return env
    return SafetyLayer(env, cfg)


def _entry(cls: type[ArmEnv]) -> Callable[..., gym.Env]:
    def make(safety: Any = None, **kwargs: Any) -> gym.Env:
        return _wrap(cls(**kwargs), safety)

    make.__name__ = f"make_{cls.task_name}"
    make.__doc__ = f"Build {cls.__name__}(**kwargs) wrapped in SafetyLayer (``safety=False`` for the raw env)."
    make.metadata = cls.metadata  # type: ignore[attr-defined]  # gym.make reads render_modes from here
    return make


make_reach = _entry(ReachEnv)
make_push = _entry(PushEnv)
make_pick_place = _entry(PickPlaceEnv)
make_peg_insert = _entry(PegInsertEnv)
