"""Safety layer: a gymnasium wrapper that makes every action safe before the env sees it.

Applied, in order, to each action (issue 2 §4; the HIL-SERL recipe in the theory notes puts
such a layer between the policy and the robot):

1. **Non-finite hold** - an action with NaN/inf anywhere becomes "hold position": zero
   end-effector delta and the gripper command kept (on non-arm envs: the zero action
   clipped into the bounds). Counted as ``nonfinite``.
2. **Per-dimension clip** to the action space bounds, or to ``action_low``/``action_high``
   when configured. Counted as ``clipped``.
3. **Workspace box** (arm envs only: the unwrapped env has ``workspace_bounds``, ``ee_pos``
   and ``max_delta``): the commanded target ``ee_pos + delta * max_delta`` is projected into
   the box shrunk by ``workspace_margin``. Counted as ``workspace``.
4. **Maximum per-step motion**: the position delta's Euclidean norm is scaled down to
   ``max_step`` metres. Counted as ``motion``.
5. **Joint-velocity limits** (arm envs with ``arm_jacobian()``/``joint_vel_limits``): the
   joint velocities the delta needs, estimated as ``J^T (J J^T + 1e-4 I)^-1 delta / control_dt``,
   are compared with ``joint_vel_scale * joint_vel_limits``; if any is exceeded the whole
   delta is scaled down uniformly (direction kept). The layer enforces this; the controller
   itself does not. Counted as ``joint_vel``.

``info["executed_action"]`` is the action after all of this, in the env's action space
(float32), so learners store what was executed. ``info["safety"]`` holds this step's
events (0/1 each) and ``info["safety_episode"]`` the totals since the last reset; also
``outside`` when the end effector is more than ``workspace_tolerance`` outside the box.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from roborl.config import field, non_negative, positive
from roborl.errors import UsageError

EVENTS = ("nonfinite", "clipped", "workspace", "motion", "joint_vel", "outside")


@dataclass(frozen=True)
class SafetyConfig:
    """Action safety layer applied before every env step."""

    enabled: bool = field(True, doc="Apply the safety layer (clip, workspace box, motion limits, NaN hold).")
    action_low: tuple[float, ...] | None = field(
        None, doc="Per-dimension lower action bounds; null = the env's action space low.")
    action_high: tuple[float, ...] | None = field(
        None, doc="Per-dimension upper action bounds; null = the env's action space high.")
    workspace: bool = field(True, doc="Project the end-effector target into the env's workspace box (arm envs).")
    workspace_margin: float = field(
        0.0, doc="Shrink the workspace box by this much on every side before projecting (m).", check=non_negative)
    workspace_tolerance: float = field(
        0.01, doc="The end effector may overshoot the box by this much (m); beyond it a step counts as 'outside'.",
        check=non_negative)
    max_step: float | None = field(
        0.03, doc="Maximum end-effector motion per step: norm of the position delta (m); null = off.", check=positive)
    joint_vel_scale: float | None = field(
        1.0, doc="Scale the delta down so no arm joint exceeds this fraction of its velocity limit; null = off.",
        check=positive)

    def __post_init__(self) -> None:
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("action_low and action_high must be set together")
        if self.action_low is not None and self.action_high is not None:
            if len(self.action_low) != len(self.action_high):
                raise ValueError("action_low and action_high must have the same length")
            if any(lo > hi for lo, hi in zip(self.action_low, self.action_high)):
                raise ValueError("action_low must be <= action_high")


class SafetyLayer(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Clip, hold non-finite actions, keep the end effector in its box, limit motion and joint speeds.

    Works on any env with a ``Box`` action space; the arm-specific parts switch on when the
    unwrapped env exposes ``workspace_bounds``, ``ee_pos``, ``max_delta`` (position delta in
    action[:3]) and optionally ``grip_command``, ``arm_jacobian()``, ``joint_vel_limits``,
    ``control_dt``. Other action spaces pass through unchanged.
    """

    def __init__(self, env: gym.Env, config: SafetyConfig | None = None) -> None:
        # RecordConstructorArgs: env.spec can re-make a stack holding this layer (gymnasium's checker does).
        gym.utils.RecordConstructorArgs.__init__(self, config=config)
        gym.Wrapper.__init__(self, env)
        self.config = config or SafetyConfig()
        space = env.action_space
        self._box = isinstance(space, gym.spaces.Box)
        if self._box:
            low = np.asarray(space.low, dtype=np.float64).reshape(-1)
            high = np.asarray(space.high, dtype=np.float64).reshape(-1)
            if self.config.action_low is not None and self.config.action_high is not None:
                if len(self.config.action_low) != low.size:
                    raise UsageError(f"safety.action_low: {len(self.config.action_low)} values for an action of "
                                     f"size {low.size}")
                low = np.maximum(low, np.asarray(self.config.action_low, dtype=np.float64))
                high = np.minimum(high, np.asarray(self.config.action_high, dtype=np.float64))
            self._low, self._high = low, high
            self._shape = space.shape
            self._dtype = space.dtype
        u = env.unwrapped
        self._arm = all(hasattr(u, a) for a in ("workspace_bounds", "ee_pos", "max_delta")) and self._box
        self._jv = self._arm and hasattr(u, "arm_jacobian") and hasattr(u, "joint_vel_limits") \
            and self.config.joint_vel_scale is not None
        self.episode_counts = dict.fromkeys(EVENTS, 0)

    # ------------------------------------------------------------------ the filter
    def _hold(self) -> np.ndarray:
        a = np.clip(np.zeros(self._low.size), self._low, self._high)
        u = self.env.unwrapped
        if self._arm and hasattr(u, "grip_command") and a.size > 3:
            a[-1] = np.clip(float(u.grip_command), self._low[-1], self._high[-1])
        return a

    def filter(self, action: Any) -> tuple[np.ndarray, dict[str, int]]:
        """The safe version of ``action`` (in the env's action space) and this step's events."""
        ev = dict.fromkeys(EVENTS, 0)
        a = np.array(action, dtype=np.float64).reshape(-1)
        if a.size != self._low.size:
            raise UsageError(f"action: expected {self._low.size} values, got {a.size}")
        if not np.all(np.isfinite(a)):
            ev["nonfinite"] = 1
            a = self._hold()
        c = np.clip(a, self._low, self._high)
        if np.any(c != a):
            ev["clipped"] = 1
        a = c
        if self._arm:
            a = self._limit_motion(a, ev)
        return a.astype(self._dtype).reshape(self._shape), ev

    def _limit_motion(self, a: np.ndarray, ev: dict[str, int]) -> np.ndarray:
        u = self.env.unwrapped
        cfg = self.config
        scale = float(u.max_delta)
        delta = a[:3] * scale
        if cfg.workspace:
            low, high = u.workspace_bounds
            low = np.asarray(low, dtype=np.float64) + cfg.workspace_margin
            high = np.asarray(high, dtype=np.float64) - cfg.workspace_margin
            ee = np.asarray(u.ee_pos, dtype=np.float64)
            target = ee + delta
            proj = np.clip(target, low, np.maximum(low, high))
            if np.any(np.abs(proj - target) > 1e-12):
                ev["workspace"] = 1
                delta = proj - ee
        if cfg.max_step is not None:
            n = float(np.linalg.norm(delta))
            if n > cfg.max_step:
                ev["motion"] = 1
                delta = delta * (cfg.max_step / n)
        if self._jv and float(np.dot(delta, delta)) > 0.0:
            jac = np.asarray(u.arm_jacobian(), dtype=np.float64)  # [3, n_arm]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), delta) / float(u.control_dt)
            limit = np.asarray(u.joint_vel_limits, dtype=np.float64) * float(cfg.joint_vel_scale)
            ratio = float(np.max(np.abs(dq) / limit))
            if ratio > 1.0:
                ev["joint_vel"] = 1
                delta = delta / ratio
        out = a.copy()
        out[:3] = np.clip(delta / scale, self._low[:3], self._high[:3])
        return out

    # ------------------------------------------------------------------ gym API
    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.episode_counts = dict.fromkeys(EVENTS, 0)
        info["safety_episode"] = dict(self.episode_counts)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._box or not self.config.enabled:
            return self.env.step(action)
        safe, ev = self.filter(action)
        obs, reward, terminated, truncated, info = self.env.step(safe)
        if self._arm:
            low, high = self.env.unwrapped.workspace_bounds
            ee = np.asarray(self.env.unwrapped.ee_pos)
            outside = np.maximum(np.asarray(low) - ee, ee - np.asarray(high))
            ev["outside"] = int(np.max(outside) > self.config.workspace_tolerance)
        for k, v in ev.items():
            self.episode_counts[k] += v
        info["executed_action"] = safe
        info["safety"] = ev
        info["safety_episode"] = dict(self.episode_counts)
        return obs, reward, terminated, truncated, info
