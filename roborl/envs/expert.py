"""Scripted experts for our arm tasks: ``expert = roborl.envs.expert(env)``.

``expert(env, noise=0.0, random_prob=None, seed=None)`` takes a made env (possibly wrapped)
and finds the task through ``env.unwrapped``. Call ``expert.reset()`` at the start of each
episode and ``expert(obs) -> action`` each step. The experts read the ground-truth task state
from ``env.unwrapped.task_state()`` rather than from ``obs``, so observation wrappers
(normalization, pixels) do not confuse them; ``obs`` is accepted for the usual policy signature.

``noise`` is the std of Gaussian noise added to the motion components of every action (in
action units); with probability ``random_prob`` (default ``noise / 2``) a uniformly random
motion replaces the expert's for that step. The gripper command is never perturbed. Both make human-like, imperfect demos; the experts are
closed-loop, so they recover from the perturbations.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from roborl.errors import UsageError

PEG_HALF_LEN = 0.04  # m, as in roborl.envs.arm.tasks (the experts read the task state, not the task module)


class Expert:
    """Base: closed-loop scripted controller in the env's action space ``[dx, dy, dz, (dyaw,) grip]``."""

    def __init__(self, env: Any, noise: float = 0.0, random_prob: float | None = None, seed: int | None = None) -> None:
        self.env = env
        self.u = env.unwrapped
        if noise < 0:
            raise UsageError(f"expert noise: expected >= 0, got {noise}")
        self.noise = float(noise)
        self.random_prob = float(noise / 2 if random_prob is None else random_prob)
        if not 0.0 <= self.random_prob <= 1.0:
            raise UsageError(f"expert random_prob: expected in [0, 1], got {random_prob}")
        self.rng = np.random.default_rng(seed)
        self.n_act = int(np.prod(self.u.action_space.shape))
        self.reset()

    def reset(self) -> None:
        """Call at the start of every episode."""

    def _move(self, target: np.ndarray, ee: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """Action [3] that moves the tool centre point toward ``target`` (clipped to [-1, 1])."""
        return np.clip(gain * (target - ee) / self.u.max_delta, -1.0, 1.0)

    def plan(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        """(position action [3], grip in [-1, 1]) from the task state."""
        raise NotImplementedError

    def __call__(self, obs: Any = None) -> np.ndarray:
        s = self.u.task_state()
        move, grip = self.plan(s)
        a = np.zeros(self.n_act)
        a[:3] = move
        a[-1] = grip
        if self.n_act == 5:  # yaw: keep the tool at the home yaw
            a[3] = np.clip(-self.u.ee_yaw / self.u.max_dyaw, -1.0, 1.0)
        # Perturb the motion only: a human demonstrator moves imprecisely but does not let go
        # of the object by accident, so the gripper command stays the expert's.
        if self.noise > 0:
            a[:-1] = a[:-1] + self.rng.normal(0.0, self.noise, a.size - 1)
        if self.random_prob > 0 and self.rng.random() < self.random_prob:
            a[:-1] = self.rng.uniform(-1.0, 1.0, a.size - 1)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


class ReachExpert(Expert):
    def plan(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        return self._move(s["goal"], s["ee"]), 1.0


class PushExpert(Expert):
    """Get behind the cube (seen from the goal), come down beside it, then push it along the line."""

    PUSH_Z = 0.025  # tool centre point height while pushing: the finger pads cover the cube's side
    HOVER_Z = 0.08
    BEHIND = 0.052  # cube half-diagonal 28 mm + closed finger half-thickness 14 mm + 10 mm margin

    def plan(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        ee, obj, goal = s["ee"], s["object"], s["goal"]
        d = goal[:2] - obj[:2]
        dist = float(np.linalg.norm(d))
        if dist < 1e-6:
            return np.zeros(3), -1.0
        u = d / dist
        rel = ee[:2] - obj[:2]
        along = float(rel @ u)
        lateral = float(np.linalg.norm(rel - along * u))
        pre = obj[:2] - u * self.BEHIND
        if along < -0.03 and lateral < 0.012 and ee[2] < 0.05:
            # In position: servo to a point ahead of the contact point along the line; the
            # lateral part of the error steers the cube back onto the line.
            advance = min(0.025, 0.6 * dist)  # slow down near the goal: a pushed cube slides on
            target = np.array([*(obj[:2] - u * (self.BEHIND - 0.02) + u * advance), self.PUSH_Z])
            if dist < 0.01:
                target = np.array([*ee[:2], self.PUSH_Z])
            return self._move(target, ee), -1.0
        if np.linalg.norm(ee[:2] - pre) > 0.012:
            # Travel at hover height, unless already low and behind the cube (then slide over).
            z = self.HOVER_Z if (ee[2] > 0.05 or along > -0.03 or np.linalg.norm(ee[:2] - pre) > 0.04) else ee[2]
            if ee[2] < self.HOVER_Z - 0.01 and np.linalg.norm(ee[:2] - obj[:2]) < 0.06:
                return self._move(np.array([*ee[:2], self.HOVER_Z]), ee), -1.0  # lift clear of the cube first
            return self._move(np.array([*pre, z]), ee), -1.0
        return self._move(np.array([*pre, self.PUSH_Z]), ee), -1.0


class PickPlaceExpert(Expert):
    """Hover above the cube, descend with the gripper open, close, then carry it to the goal."""

    CLOSE_STEPS = 3

    def reset(self) -> None:
        self.closing = 0

    def plan(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        ee, obj, goal = s["ee"], s["object"], s["goal"]
        rel = obj - ee
        at_cube = np.linalg.norm(rel[:2]) < 0.012 and abs(rel[2]) < 0.012
        # Holding: closed on something cube-sized, with the cube between the fingers (it may
        # slide a little in the grasp while being lifted).
        holding = self.closing >= self.CLOSE_STEPS and s["grip_open"] > 0.03 and np.linalg.norm(rel) < 0.03
        if at_cube or holding:
            if self.closing < self.CLOSE_STEPS:
                self.closing += 1
                return self._move(obj, ee), -1.0
            # The cube's offset in the hand is kept while carrying, so steer the cube, not the hand.
            return self._move(goal - rel, ee), -1.0
        self.closing = 0
        if np.linalg.norm(rel[:2]) > 0.01:
            hover = np.array([obj[0], obj[1], max(obj[2] + 0.06, ee[2] if np.linalg.norm(rel[:2]) < 0.03 else 0.0)])
            if ee[2] < obj[2] + 0.04 and np.linalg.norm(rel[:2]) > 0.02:
                hover = np.array([ee[0], ee[1], obj[2] + 0.06])  # too low next to the cube: go up first
            return self._move(hover, ee), 1.0
        return self._move(obj, ee), 1.0


class PegInsertExpert(Expert):
    """Align the peg tip over the hole, plunge, let go once inserted; recover a dropped or tilted peg.

    Modes (``self.mode``), decided from the task state every step:

    * ``insert``: align the tip over the hole at ``HOVER`` (8 mm above the 40 mm walls); once the tip is
      within ``ENTER`` of the hole axis, plunge ``PLUNGE`` per step. A fast plunge is what makes the noisy
      expert work: the peg pivots in the two-pad grasp, so a tip a few millimetres off the axis still
      slides in when it meets the rim with speed, whereas a slow descent (or pressing on the rim) tips it
      over. A tip left on the rim is lifted back to the hover height and re-aligned.
    * ``release``: the tip is deep in the hole (or inside but slipped up in the grasp, so the hand would
      hit the walls first): open the fingers, let the peg drop to the bottom and lift the hand clear, so
      the hand's jitter cannot lever the peg off the hole axis. A peg that jams in the mouth is re-grasped.
    * ``regrasp``: the peg is not held (fingers closed on nothing or open, or the peg is no longer between
      the pads) or is badly tilted, outside the hole: open, come over the grasp point (``GRASP_FROM_TIP``
      up the peg's axis from its tip) from above, close for ``CLOSE_STEPS`` without moving, then ``insert``.
    """

    HOVER = 0.048           # tip height over the hole bottom while aligning (walls are 40 mm high)
    ENTER = 0.004           # plunge when the tip is this close to the hole axis (m)
    PLUNGE = 0.03           # tip descent per step while plunging / inside the hole (m)
    INSIDE = 0.035          # tip below this height over the hole bottom and aligned: inside the hole
    RELEASE_H = 0.01        # tip this low in the hole: inserted, let go
    CLEAR = 0.13            # after letting go, lift the hand to this height over the tip (the peg is 80 mm long)
    GRASP_FROM_TIP = 0.06   # where the hand holds the peg: 60 mm up the axis from the tip (as at reset)
    MIN_HOLD = 0.045        # tip-to-hand distance along the axis below which the peg has slipped up
    HELD_OPENING = (0.012, 0.03)  # finger opening (m) when closed on the 20 mm peg (~0 when closed on nothing)
    MAX_TILT_COS = 0.9      # peg axis z below this (~26 deg) outside the hole: re-grasp
    CLOSE_STEPS = 3

    def reset(self) -> None:
        self.mode = "insert"
        self.closing = 0
        self.released = 0

    def _in_hand(self, s: dict[str, Any]) -> bool:
        """Peg held: fingers closed on something peg-sized, hand on the peg's axis at about the grasp height."""
        rel = s["ee"] - s["object"]
        along = float(rel @ s["axis"])
        perp = float(np.linalg.norm(rel - along * s["axis"]))
        lo, hi = self.HELD_OPENING
        return lo < s["grip_open"] < hi and perp < 0.015 and 0.02 < along < 0.085

    def plan(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        ee, tip, goal, axis = s["ee"], s["object"], s["goal"], s["axis"]
        e = float(np.linalg.norm(goal[:2] - tip[:2]))
        h = float(tip[2] - goal[2])
        inside = h < self.INSIDE and e < 0.008
        if self.mode == "release":
            self.released += 1
            # Let go, but the peg did not drop to the bottom (jammed in the mouth): take it again.
            if inside and (h < self.RELEASE_H + 0.005 or self.released <= self.CLOSE_STEPS):
                return self._move(np.array([*ee[:2], max(ee[2], tip[2] + self.CLEAR)]), ee), 1.0
            self.mode = "regrasp"
        if self.mode == "insert":
            # Inside the hole the walls hold the peg: keep going whatever the grasp looks like.
            if not inside and (not self._in_hand(s) or axis[2] < self.MAX_TILT_COS):
                self.mode, self.closing = "regrasp", 0
            elif inside and (h < self.RELEASE_H or float((ee - tip) @ axis) < self.MIN_HOLD):
                self.mode, self.released = "release", 0
                return np.zeros(3), 1.0
        if self.mode == "regrasp":
            return self._regrasp(s)
        offset = ee - tip  # where the hand is relative to the peg tip
        if inside:
            target = np.array([goal[0], goal[1], max(tip[2] - self.PLUNGE, goal[2] - 0.005)])
        elif e < self.ENTER and h < self.HOVER + 0.01:
            target = np.array([goal[0], goal[1], tip[2] - self.PLUNGE])
        else:
            # Far: travel at the current height (<= 15 cm), then settle to the hover height.
            z = self.HOVER if e < 0.01 else max(self.HOVER, min(h, 0.15))
            target = np.array([goal[0], goal[1], goal[2] + z])
        return self._move(target + offset, ee), -1.0

    def _regrasp(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        ee, tip, axis = s["ee"], s["object"], s["axis"]
        grasp = tip + self.GRASP_FROM_TIP * axis
        grasp[2] = max(grasp[2], 0.03)  # a fallen peg: hold it by its middle, fingers above the table
        d_xy = float(np.linalg.norm(grasp[:2] - ee[:2]))
        if self.closing > 0 or (d_xy < 0.006 and abs(grasp[2] - ee[2]) < 0.006):
            self.closing += 1
            if self.closing >= self.CLOSE_STEPS:
                self.mode, self.closing = "insert", 0
            return self._move(grasp, ee), -1.0
        if d_xy > 0.008:
            # Open and come over the grasp point from above: first straight up, clear of the peg's top
            # (moving sideways at its height knocks it over), then across.
            clear = float(max(tip[2], (tip + 2 * PEG_HALF_LEN * axis)[2])) + 0.025
            if d_xy > 0.02 and ee[2] < clear - 0.01:
                return self._move(np.array([ee[0], ee[1], clear]), ee), 1.0
            z = clear if d_xy > 0.02 else max(ee[2], grasp[2])
            return self._move(np.array([grasp[0], grasp[1], z]), ee), 1.0
        return self._move(grasp, ee), 1.0


# Explicit table: task_name of the unwrapped env -> expert class.
EXPERTS: dict[str, type[Expert]] = {
    "reach": ReachExpert,
    "push": PushExpert,
    "pick_place": PickPlaceExpert,
    "peg_insert": PegInsertExpert,
}


def expert(env: Any, noise: float = 0.0, random_prob: float | None = None, seed: int | None = None) -> Expert:
    """The scripted expert for ``env`` (made, possibly wrapped). See the module docstring."""
    name = getattr(env.unwrapped, "task_name", None)
    if name not in EXPERTS:
        spec = getattr(env.unwrapped, "spec", None)
        raise UsageError(f"no scripted expert for env {getattr(spec, 'id', type(env.unwrapped).__name__)!r}; "
                         f"experts exist for roborl tasks {sorted(EXPERTS)}")
    return EXPERTS[name](env, noise=noise, random_prob=random_prob, seed=seed)
