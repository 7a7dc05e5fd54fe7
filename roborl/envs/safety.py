"""Safety layer: a gymnasium wrapper that makes every action safe before the env sees it.

Applied, in order, to each action (the HIL-SERL recipe in the theory notes puts
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
A caller that drops those three keys unread (the on-policy runner's info filter) may set
``report_info = False`` (see :func:`roborl.envs.wrappers.skip_unread_info`): the same action
reaches the env and the episode counts are still kept, only the three entries are not built.
"""
from __future__ import annotations

import math
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


# The joint-velocity test screens with a fast closed-form 3x3 solve on Python floats; only a
# ratio within this relative margin of the limit (or above it) is recomputed with the exact
# LAPACK formula, so the executed action is bit-identical to computing it exactly every step.
# The closed form's relative error is ~cond(J J^T + 1e-4 I) * 1e-16 <= ~1e-11 here.
_JV_SCREEN_MARGIN = 1e-6


class SafetyLayer(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Clip, hold non-finite actions, keep the end effector in its box, limit motion and joint speeds.

    Works on any env with a ``Box`` action space; the arm-specific parts switch on when the
    unwrapped env exposes ``workspace_bounds``, ``ee_pos``, ``max_delta`` (position delta in
    action[:3]) and optionally ``grip_command``, ``arm_jacobian()``, ``joint_vel_limits``,
    ``control_dt``. Other action spaces pass through unchanged.

    Speed (the whole wrapper stack should cost <= 10 % of an arm
    step): the filter works on Python floats, since each numpy call on these 3-6 element
    vectors costs more than the arithmetic; the workspace box, ``control_dt`` and the joint
    velocity limits are read at ``reset`` (they are fixed within an episode). When this layer
    sits directly on an env with ``step_in_bounds`` (our arm tasks), it calls that instead
    of ``step``: the action is already finite and inside the action space, so the env's own
    validation (finite check, clip) would only repeat this layer's.
    """

    def __init__(self, env: gym.Env, config: SafetyConfig | None = None) -> None:
        # RecordConstructorArgs: env.spec can re-make a stack holding this layer (gymnasium's checker does).
        gym.utils.RecordConstructorArgs.__init__(self, config=config)
        gym.Wrapper.__init__(self, env)
        self.config = config or SafetyConfig()
        space = env.action_space
        self._box = isinstance(space, gym.spaces.Box)
        u = env.unwrapped
        self._u = u
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
            self._n = int(low.size)
            # np.clip(v, lo, hi) == min(max(v, lo), hi) == (lo' if v < lo' else hi if v > hi else v)
            # with lo' = min(lo, hi), also when a configured bound leaves lo > hi.
            self._lo_l: list[float] = np.minimum(low, high).tolist()
            self._hi_l: list[float] = high.tolist()
            # min(vals) >= every lower bound and max(vals) <= every upper bound => nothing to clip
            self._lo_sup, self._hi_inf = max(self._lo_l), min(self._hi_l)
            self._shape = space.shape
            self._flat = space.shape == (self._n,)
            self._dtype = space.dtype
        self._arm = all(hasattr(u, a) for a in ("workspace_bounds", "ee_pos", "max_delta")) and self._box
        self._jv = self._arm and hasattr(u, "arm_jacobian") and hasattr(u, "joint_vel_limits") \
            and self.config.joint_vel_scale is not None
        # Trusted entry: only when nothing sits between this layer and the env, and the filtered
        # action is inside the env's own action space (it is: low/high only ever shrink it).
        trusted = getattr(u, "step_in_bounds", None) if env is u else None
        self._env_step = trusted if callable(trusted) else env.step
        self._ee_in_info = callable(trusted)  # step_in_bounds envs put the post-step ee_pos [3] in info
        self.episode_counts = dict.fromkeys(EVENTS, 0)
        # The config is frozen: read its per-step switches once.
        self._active = self._box and self.config.enabled
        # Flat Box, no arm limits: ``step`` may take the in-bounds shortcut (see there).
        self._simple = self._active and not self._arm and self._flat
        self._tol = self.config.workspace_tolerance
        self._workspace_on = self.config.workspace
        self._max_step = self.config.max_step
        #: Write ``executed_action`` / ``safety`` / ``safety_episode`` into each step's info.
        #: False only for a caller that drops those keys unread (``skip_unread_info``).
        self.report_info = True
        self._read_episode_constants()

    def _read_episode_constants(self) -> None:
        """Workspace box (raw and shrunk by the margin), control period and joint-velocity limits."""
        if not self._arm:
            return
        u, cfg = self._u, self.config
        low, high = u.workspace_bounds
        low = np.asarray(low, dtype=np.float64)
        high = np.asarray(high, dtype=np.float64)
        # Usually the same every episode: then the derived values below are already right.
        key = (low.tolist(), high.tolist(),
               self._jv and (float(u.control_dt), np.asarray(u.joint_vel_limits, dtype=np.float64).tolist()))
        if key == getattr(self, "_constants_of", None):
            return
        self._constants_of = key
        self._ws_lo, self._ws_hi = low.tolist(), high.tolist()
        shrunk_lo = low + cfg.workspace_margin
        shrunk_hi = high - cfg.workspace_margin
        self._box_lo = shrunk_lo.tolist()
        self._box_hi = np.maximum(shrunk_lo, shrunk_hi).tolist()
        if self._jv:
            self._dt = float(u.control_dt)
            limit = np.asarray(u.joint_vel_limits, dtype=np.float64) * float(cfg.joint_vel_scale)
            self._jv_limit = limit
            self._inv_lim_dt = (1.0 / (limit * self._dt)).tolist()
            self._k2_max = max(self._inv_lim_dt) ** 2

    # ------------------------------------------------------------------ the filter
    def _hold(self) -> np.ndarray:
        a = np.clip(np.zeros(self._low.size), self._low, self._high)
        u = self._u
        if self._arm and hasattr(u, "grip_command") and a.size > 3:
            a[-1] = np.clip(float(u.grip_command), self._low[-1], self._high[-1])
        return a

    def _values(self, action: Any) -> list[float]:
        """``action`` flattened into Python floats (exactly its float64 values)."""
        if type(action) is np.ndarray and action.dtype.kind == "f" and action.dtype.itemsize <= 8:
            vals = (action if action.ndim == 1 else action.reshape(-1)).tolist()
        else:
            vals = np.array(action, dtype=np.float64).reshape(-1).tolist()
        if len(vals) != self._n:
            raise UsageError(f"action: expected {self._n} values, got {len(vals)}")
        return vals

    def filter(self, action: Any) -> tuple[np.ndarray, dict[str, int]]:
        """The safe version of ``action`` (in the env's action space) and this step's events."""
        out, flags = self._filter(action)
        ev = dict(zip(EVENTS, flags))
        ev["outside"] = 0
        return self._as_action(out), ev

    def _as_action(self, out: list[float]) -> np.ndarray:
        safe = np.array(out, dtype=self._dtype)
        return safe if self._flat else safe.reshape(self._shape)

    def _filter(self, action: Any,
                vals: list[float] | None = None) -> tuple[list[float], tuple[int, int, int, int, int]]:
        """(safe action as floats, (nonfinite, clipped, workspace, motion, joint_vel) flags);
        ``vals``: ``_values(action)`` when the caller already has it."""
        if vals is None:
            vals = self._values(action)
        nonfinite = 0
        total = sum(vals)  # finite sum => every value finite; otherwise check each one
        if total - total != 0.0 and not all(map(math.isfinite, vals)):
            nonfinite = 1
            vals = self._hold().tolist()
        if self._lo_sup <= min(vals) and max(vals) <= self._hi_inf:
            out, clipped = vals, 0  # inside every bound (the common case): the clip below is the identity
        else:
            out = [lo if v < lo else (hi if v > hi else v) for v, lo, hi in zip(vals, self._lo_l, self._hi_l)]
            clipped = int(out != vals)
        if not self._arm:
            return out, (nonfinite, clipped, 0, 0, 0)
        ws, motion, jv = self._limit_motion(out)
        return out, (nonfinite, clipped, ws, motion, jv)

    def _limit_motion(self, out: list[float]) -> tuple[int, int, int]:
        """Workspace box, max step and joint-velocity limit on ``out[:3]`` (edited in place).

        Same float operations, in the same order, as the numpy formulation (elementwise
        ops are exact either way; the norm is ``sqrt(x*x + y*y + z*z)`` like numpy's dot).
        """
        u = self._u
        scale = float(u.max_delta)
        d0, d1, d2 = out[0] * scale, out[1] * scale, out[2] * scale
        ws = motion = jv = 0
        if self._workspace_on:
            e0, e1, e2 = u.ee_pos.tolist()
            lo, hi = self._box_lo, self._box_hi
            t0, t1, t2 = e0 + d0, e1 + d1, e2 + d2
            p0 = lo[0] if t0 < lo[0] else (hi[0] if t0 > hi[0] else t0)
            p1 = lo[1] if t1 < lo[1] else (hi[1] if t1 > hi[1] else t1)
            p2 = lo[2] if t2 < lo[2] else (hi[2] if t2 > hi[2] else t2)
            if abs(p0 - t0) > 1e-12 or abs(p1 - t1) > 1e-12 or abs(p2 - t2) > 1e-12:
                ws = 1
                d0, d1, d2 = p0 - e0, p1 - e1, p2 - e2
        max_step = self._max_step
        if max_step is not None:
            n = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
            if n > max_step:
                motion = 1
                f = max_step / n
                d0, d1, d2 = d0 * f, d1 * f, d2 * f
        if self._jv and d0 * d0 + d1 * d1 + d2 * d2 > 0.0:
            if not self._joint_vel_ratio_fast(d0, d1, d2) <= 1.0 - _JV_SCREEN_MARGIN:  # NaN included
                delta = np.array((d0, d1, d2))
                jac = np.asarray(u.arm_jacobian(), dtype=np.float64)  # [3, n_arm]
                dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), delta) / self._dt
                ratio = float(np.max(np.abs(dq) / self._jv_limit))
                if ratio > 1.0:
                    jv = 1
                    d0, d1, d2 = (delta / ratio).tolist()
        lo, hi = self._lo_l, self._hi_l
        d0, d1, d2 = d0 / scale, d1 / scale, d2 / scale
        out[0] = lo[0] if d0 < lo[0] else (hi[0] if d0 > hi[0] else d0)
        out[1] = lo[1] if d1 < lo[1] else (hi[1] if d1 > hi[1] else d1)
        out[2] = lo[2] if d2 < lo[2] else (hi[2] if d2 > hi[2] else d2)
        return ws, motion, jv

    def _joint_vel_ratio_fast(self, d0: float, d1: float, d2: float) -> float:
        """A screen for max_j |dq_j| / limit_j with dq = J^T (J J^T + 1e-4 I)^-1 delta / control_dt:
        that ratio by a closed-form symmetric 3x3 inverse, or 0.5 when a bound on |dq| already
        shows it is at most 0.5 (see ``_JV_SCREEN_MARGIN``)."""
        jac = self._u.arm_jacobian()  # [3, n_arm]
        (a, b, c), (_, d, e), (_, _, f) = jac.dot(jac.T).tolist()
        a += 1e-4
        d += 1e-4
        f += 1e-4
        c11, c12, c13 = d * f - e * e, c * e - b * f, b * e - c * d
        c22, c23, c33 = a * f - c * c, b * c - a * e, a * d - b * b
        det = a * c11 + b * c12 + c * c13
        y0 = c11 * d0 + c12 * d1 + c13 * d2  # adj(A) delta, A = J J^T + 1e-4 I; x = A^-1 delta = y / det
        y1 = c12 * d0 + c22 * d1 + c23 * d2
        y2 = c13 * d0 + c23 * d1 + c33 * d2
        # |dq|^2 = x^T J J^T x = x . delta - 1e-4 |x|^2 <= x . delta, and max_j |dq_j| / limit_j is
        # at most |dq| * max_j (1 / limit_j): when that is already small (98 % of the steps of
        # random actions on Reach), skip x and the per-joint products.
        if (y0 * d0 + y1 * d1 + y2 * d2) / det * self._k2_max <= 0.25:  # i.e. ratio <= 0.5
            return 0.5
        x0, x1, x2 = y0 / det, y1 / det, y2 / det
        r0, r1, r2 = jac.tolist()
        return max([abs(p * x0 + q * x1 + r * x2) * k for p, q, r, k in zip(r0, r1, r2, self._inv_lim_dt)])

    # ------------------------------------------------------------------ gym API
    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._read_episode_constants()
        self.episode_counts = dict.fromkeys(EVENTS, 0)
        info["safety_episode"] = dict(self.episode_counts)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._active:
            return self.env.step(action)
        vals = None
        if self._simple and type(action) is np.ndarray and action.dtype is self._dtype and action.shape == self._shape:
            # Shortcut for the common case on non-arm envs: a finite action inside every bound.
            # Plain formula: ``_filter`` (no hold, no clip, nothing else on non-arm envs) and
            # ``_as_action`` = array(action.tolist(), dtype), which is exactly a copy of ``action``
            # (float -> Python float -> the same dtype is exact). Anything else takes the full path.
            vals = action.tolist()  # = _values(action) for this dtype and shape
            total = sum(vals)
            if total - total == 0.0 and self._lo_sup <= min(vals) and max(vals) <= self._hi_inf:
                safe = action.copy()
                result = self._env_step(safe)
                if self.report_info:
                    info = result[4]
                    info["executed_action"] = safe
                    info["safety"] = dict.fromkeys(EVENTS, 0)
                    info["safety_episode"] = self.episode_counts.copy()
                return result
        out, (nonfinite, clipped, ws, motion, jv) = self._filter(action, vals)
        safe = self._as_action(out)
        result = self._env_step(safe)
        info = result[4]
        outside = 0
        if self._arm:
            # Our arm envs report the post-step ee_pos in info (a fresh copy); others are asked.
            ee = info.get("ee_pos") if self._ee_in_info else None
            e0, e1, e2 = (ee if ee is not None else self._u.ee_pos).tolist()
            lo, hi = self._ws_lo, self._ws_hi
            worst = max(lo[0] - e0, lo[1] - e1, lo[2] - e2, e0 - hi[0], e1 - hi[1], e2 - hi[2])
            outside = int(worst > self._tol)
        counts = self.episode_counts
        if nonfinite or clipped or ws or motion or jv or outside:
            counts["nonfinite"] += nonfinite
            counts["clipped"] += clipped
            counts["workspace"] += ws
            counts["motion"] += motion
            counts["joint_vel"] += jv
            counts["outside"] += outside
        if not self.report_info:
            return result
        info["executed_action"] = safe
        info["safety"] = {"nonfinite": nonfinite, "clipped": clipped, "workspace": ws, "motion": motion,
                          "joint_vel": jv, "outside": outside}
        info["safety_episode"] = counts.copy()
        return result  # the inner 5-tuple itself: only info (a dict) was edited
