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
    """Align the peg tip over the hole at hover height, then descend while correcting."""

    HOVER_TIP_Z = 0.055  # hole walls are 40 mm high

    def plan(self, s: dict[str, Any]) -> tuple[np.ndarray, float]:
        ee, tip, goal = s["ee"], s["object"], s["goal"]
        err_xy = goal[:2] - tip[:2]
        offset = ee - tip  # where the hand is relative to the peg tip
        if np.linalg.norm(err_xy) > 0.0025 and tip[2] > goal[2] + 0.035:
            z = max(self.HOVER_TIP_Z, min(tip[2], 0.15)) if np.linalg.norm(err_xy) > 0.01 else self.HOVER_TIP_Z
            target_tip = np.array([goal[0], goal[1], z])
            return self._move(target_tip + offset, ee), -1.0
        if np.linalg.norm(err_xy) > 0.003 and tip[2] <= goal[2] + 0.035:
            # Stuck on the rim: back up a little and re-align.
            return self._move(np.array([*(ee[:2] + err_xy), ee[2] + 0.01]), ee), -1.0
        step = 0.012 if tip[2] > goal[2] + 0.045 else 0.006
        target_tip = np.array([goal[0], goal[1], max(tip[2] - step, goal[2] - 0.005)])
        return self._move(target_tip + offset, ee), -1.0


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
