"""Server-side enforcement of a robot's declared :class:`~roborl.robots.RobotLimits`, for every backend.

:class:`LimitGuard` turns a client's action into the command that is actually sent to the
adapter. In order (the math is :class:`roborl.envs.safety.SafetyLayer`'s own filter, run on a
small view of the robot rather than copied):

1. wrong shape / non-numeric dtype -> rejected (:class:`MessageError`; nothing is sent);
2. NaN/inf anywhere -> hold: zero end-effector motion with the last gripper command kept
   (``ee_delta``), or the adapter's own :meth:`~roborl.robots.Robot.hold` (other modes, or
   before the first command of an episode, when the gripper command is not known);
3. clip into the action box;
4. (``ee_delta`` with limits) workspace projection: the target ``ee_pos + action[:3] * ee_scale``
   is projected into the declared box, ``ee_pos`` being the robot's last reported
   ``info["ee_pos"]``; a robot that declares a box but reports no position is held;
5. the motion's norm is scaled down to ``max_step`` metres;
6. with ``max_joint_vel`` and ``arm_jacobian()`` on the robot, the motion is scaled down so
   no joint exceeds its limit (``J^T (J J^T + 1e-4 I)^-1 delta / period``).
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.envs.safety import SafetyConfig, SafetyLayer
from roborl.errors import UsageError
from roborl.robots import Robot, RobotLimits
from roborl.robots.transport import MessageError

#: safety events reported per command in ``info["safety"]`` (0/1 each).
LIMIT_EVENTS = ("nonfinite", "clipped", "workspace", "motion", "joint_vel", "no_ee_pos")


class _RobotView(gym.Env):
    """What :class:`SafetyLayer` reads from an arm env, served from a robot's limits and last reported state.

    ``ee_pos`` [3] and ``grip_command`` are set by :class:`LimitGuard` before each filter call.
    ``arm_jacobian``/``joint_vel_limits``/``control_dt`` exist only when the joint-velocity
    check applies (the layer switches it on by their presence).
    """

    def __init__(self, action_space: spaces.Box, limits: RobotLimits, hz: float,
                 jacobian: Callable[[], np.ndarray] | None) -> None:
        self.action_space = action_space
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.max_delta = float(limits.ee_scale or 1.0)
        if limits.workspace_low is not None and limits.workspace_high is not None:
            self._bounds = (np.asarray(limits.workspace_low, np.float64), np.asarray(limits.workspace_high, np.float64))
        else:
            self._bounds = (np.full(3, -np.inf), np.full(3, np.inf))
        self.ee = np.zeros(3)
        self.grip_command = 0.0
        if limits.max_joint_vel is not None and jacobian is not None:
            self.arm_jacobian = jacobian
            self.joint_vel_limits = np.asarray(limits.max_joint_vel, np.float64)
            self.control_dt = 1.0 / float(hz)

    @property
    def workspace_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._bounds[0].copy(), self._bounds[1].copy()

    @property
    def ee_pos(self) -> np.ndarray:
        return self.ee

    def step(self, action: Any):  # pragma: no cover - the guard only filters
        raise NotImplementedError

    def reset(self, **kw: Any):  # pragma: no cover
        raise NotImplementedError


class _PlainView(gym.Env):
    """A view without arm attributes: the layer then only holds non-finite actions and clips."""

    def __init__(self, action_space: spaces.Box) -> None:
        self.action_space = action_space
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def step(self, action: Any):  # pragma: no cover - the guard only filters
        raise NotImplementedError

    def reset(self, **kw: Any):  # pragma: no cover
        raise NotImplementedError


class LimitGuard:
    """``guard(action, ee_pos) -> (command [act_dim] float32 or None for 'hold', events)``.

    ``ee_pos``: the robot's last reported end-effector position [3] (or None). Raises
    :class:`MessageError` for an action that cannot be interpreted at all (wrong shape, dtype).
    """

    def __init__(self, robot: Robot, hz: float) -> None:
        space = robot.action_space
        if not isinstance(space, spaces.Box):
            raise UsageError(f"robot action space must be a Box, got {space}")
        self.shape = tuple(space.shape)
        self.low = np.asarray(space.low, np.float64).reshape(-1)
        self.high = np.asarray(space.high, np.float64).reshape(-1)
        self.limits: RobotLimits | None = getattr(robot, "limits", None)
        lim = self.limits
        self.ee_mode = (robot.action_mode == "ee_delta" and lim is not None and lim.ee_scale is not None
                        and int(np.prod(self.shape)) >= 3)
        self.needs_ee = self.ee_mode and lim is not None and lim.workspace_low is not None
        if self.ee_mode and lim is not None:
            jac = getattr(robot, "arm_jacobian", None)
            self.view: Any = _RobotView(space, lim, hz, jac if callable(jac) else None)
            cfg = SafetyConfig(workspace=lim.workspace_low is not None, workspace_margin=0.0, max_step=lim.max_step,
                               joint_vel_scale=1.0 if lim.max_joint_vel is not None else None)
        else:
            self.view = _PlainView(space)
            cfg = SafetyConfig(workspace=False, max_step=None, joint_vel_scale=None)
        self.layer = SafetyLayer(self.view, cfg)
        self.grip_index = int(np.prod(self.shape)) - 1 if self.ee_mode and int(np.prod(self.shape)) > 3 else None
        self.grip_known = False

    def new_episode(self) -> None:
        """After a reset the gripper command is unknown until the first command is sent."""
        self.grip_known = False

    def hold_command(self) -> np.ndarray | None:
        """The 'zero motion, gripper kept' command (ee_delta), or None: use the adapter's own
        ``robot.hold()`` (other modes, or no command sent yet this episode: the gripper state is unknown)."""
        if not self.ee_mode or (self.grip_index is not None and not self.grip_known):
            return None
        low, high = self.low, self.high
        hold = np.clip(np.zeros(low.size), low, high)
        if self.grip_index is not None:
            hold[self.grip_index] = np.clip(self.view.grip_command, low[self.grip_index], high[self.grip_index])
        return hold.astype(np.float32).reshape(self.shape)

    def __call__(self, action: Any, ee_pos: Any) -> tuple[np.ndarray | None, dict[str, int]]:
        a = np.asarray(action)
        if a.shape != self.shape:
            raise MessageError(f"action shape {list(a.shape)} != {list(self.shape)}")
        if a.dtype.kind not in "fiu":
            raise MessageError(f"action dtype {a.dtype} is not numeric")
        events = dict.fromkeys(LIMIT_EVENTS, 0)
        if self.needs_ee:
            e = None if ee_pos is None else np.asarray(ee_pos, np.float64).reshape(-1)
            if e is None or e.size != 3 or not np.all(np.isfinite(e)):
                events["no_ee_pos"] = 1
                return self.hold_command(), events
            self.view.ee = e
        safe, ev = self.layer.filter(a.astype(np.float64))
        for k in ("nonfinite", "clipped", "workspace", "motion", "joint_vel"):
            events[k] = int(ev[k])
        if events["nonfinite"]:
            return self.hold_command(), events
        return np.asarray(safe, np.float32).reshape(self.shape), events

    def executed(self, command: np.ndarray | None) -> None:
        """Record the command sent (the hold keeps its gripper)."""
        if command is not None and self.grip_index is not None:
            self.view.grip_command = float(command.reshape(-1)[self.grip_index])
            self.grip_known = True


def limits_notice(robot: Robot, backend: str, require: bool) -> str | None:
    """One-line warning when ``robot`` declares no limits (None otherwise); with ``require``, a UsageError."""
    lim = getattr(robot, "limits", None)
    if lim is not None and not isinstance(lim, RobotLimits):
        raise UsageError(f"--backend {backend!r}: robot.limits must be a RobotLimits or None, got {type(lim).__name__}")
    if lim is not None and lim.declared:
        return None
    if require:
        raise UsageError(f"--backend {backend!r} declares no limits (Robot.limits); --require-limits refuses it")
    return (f"warning: --backend {backend!r} declares no limits (Robot.limits): the server only clips actions "
            f"into the action box and holds non-finite ones")


__all__ = ["LimitGuard", "LIMIT_EVENTS", "limits_notice"]
