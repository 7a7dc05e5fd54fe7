"""A hardware-like robot backend for the tests, loaded BY MODULE PATH (``--backend tests.robots.hwlike_arm:make``).

Like a real velocity-controlled arm behind a thin driver, it trusts whatever it is sent:
no clipping, no workspace, no NaN check of its own. Each control period it integrates the
current command kinematically (``ee += action[:3] * EE_SCALE``, repeated until the next
command or :meth:`hold`) and reports its end effector. It also measures, over its whole
life, how far it ever got outside its declared box and the longest move in one period,
and reports both in ``info`` so a test can check the server's limits from the outside.

``make("")`` declares limits; ``make("nolimits")`` declares none (the same arm, unguarded
but for the action-box clip and the NaN hold every backend gets).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from roborl.robots import RobotBase, RobotLimits, RobotState

LOW = (0.30, -0.20, 0.05)
HIGH = (0.60, 0.20, 0.40)
HOME = (0.45, 0.0, 0.20)
EE_SCALE = 0.05   # m per unit action per period: a full-scale diagonal command asks for 8.7 cm
MAX_STEP = 0.02   # m per command


class KinematicArm(RobotBase):
    action_mode = "ee_delta"
    max_episode_steps = None

    def __init__(self, limits: bool = True, control_hz: float = 50.0) -> None:
        self.control_hz = float(control_hz)
        self.observation_space = spaces.Box(-np.inf, np.inf, (7,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.limits = RobotLimits(workspace_low=LOW, workspace_high=HIGH, ee_scale=EE_SCALE,
                                  max_step=MAX_STEP) if limits else None
        self.ee = np.array(HOME, np.float64)
        self.prev = self.ee.copy()
        self.cmd = np.zeros(4)
        self.grip = 1.0
        self.connected = False
        self.estopped = False
        self.worst_outside = 0.0   # m, max over life of the distance outside the declared box
        self.max_move = 0.0        # m, longest motion in one period
        self.ticks = 0
        self.commands = 0

    def connect(self) -> None:
        self.connected = True

    def disconnect(self) -> None:
        self.hold()
        self.connected = False

    def reset(self, seed: int | None = None) -> RobotState:
        rng = np.random.default_rng(seed)
        # Home near a random corner region: walls are never far away.
        self.ee = np.array(HOME) + rng.uniform(-0.12, 0.12, 3) * np.array([1.0, 1.3, 1.0])
        self.prev = self.ee.copy()
        self.cmd = np.zeros(4)
        self.estopped = False
        return self.observe()

    def send_action(self, action: np.ndarray) -> None:
        self.cmd = np.asarray(action, np.float64).reshape(-1).copy()
        self.commands += 1

    def hold(self) -> None:
        self.cmd = np.array([0.0, 0.0, 0.0, self.cmd[3] if self.cmd.size > 3 else self.grip])

    def estop(self) -> None:
        self.estopped = True
        self.hold()

    def tick(self) -> RobotState:
        self.ticks += 1
        if not self.estopped:
            self.prev = self.ee.copy()
            self.ee = self.ee + self.cmd[:3] * EE_SCALE
            if self.cmd.size > 3:
                self.grip = float(self.cmd[3])
            move = float(np.linalg.norm(self.ee - self.prev))
            self.max_move = max(self.max_move, move) if np.isfinite(move) else float("inf")
            out = np.maximum(np.maximum(np.array(LOW) - self.ee, self.ee - np.array(HIGH)), 0.0)
            dist = float(np.linalg.norm(out))
            self.worst_outside = max(self.worst_outside, dist) if np.isfinite(dist) else float("inf")
        return self.observe()

    def observe(self) -> RobotState:
        vel = (self.ee - self.prev) * self.control_hz
        obs = np.concatenate([self.ee, vel, [self.grip]]).astype(np.float32)
        info: dict[str, Any] = {"ee_pos": [float(v) for v in self.ee], "worst_outside": self.worst_outside,
                                "max_move": self.max_move, "ticks": self.ticks, "commands": self.commands}
        return RobotState(obs, 0.0, False, False, info)


def make(arg: str = "", **options: Any) -> KinematicArm:
    """``tests.robots.hwlike_arm:make[:nolimits]``."""
    return KinematicArm(limits=arg != "nolimits", **options)


def not_a_robot(arg: str = "") -> object:
    """A factory that returns something else (the server must refuse it)."""
    return object()
