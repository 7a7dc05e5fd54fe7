"""The one device interface: an end-effector delta command, a gripper command, and events.

Every device (keyboard, gamepad, SpaceMouse, scripted expert) implements :class:`Device`.
``read(obs)`` is called once per control step by the fixed-rate loop and returns a
:class:`Command`; :func:`to_env_action` maps it into the env's ``[-1, 1]`` action space.
"""
from __future__ import annotations

import enum
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from roborl.errors import UsageError

MOTION_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw")


class Event(enum.Enum):
    """Discrete operator events (start/stop episode, labels, interventions)."""

    START = "start"            # begin the next episode
    STOP = "stop"              # end the episode; the operator then decides keep/success/failure/discard
    KEEP = "keep"              # keep the episode, label from the env's is_success
    SUCCESS = "success"        # keep the episode, labelled success
    FAILURE = "failure"        # keep the episode, labelled failure
    DISCARD = "discard"        # drop the episode (redo it)
    INTERVENE_ON = "intervene_on"
    INTERVENE_OFF = "intervene_off"
    QUIT = "quit"              # end the session


DECISIONS = (Event.KEEP, Event.SUCCESS, Event.FAILURE, Event.DISCARD)


@dataclass(frozen=True)
class Command:
    """One device report.

    motion: float32 [6] = [dx, dy, dz, droll, dpitch, dyaw] in [-1, 1] (after deadzone and sensitivity).
    grip:   float in [-1, 1]; +1 = fully open, -1 = fully closed (the arm envs' convention).
    events: the events since the previous report, in order.
    active: whether the raw report had any non-zero input (axes or buttons); the zero
            watchdog uses it to spot devices that silently send zeros.
    """

    motion: np.ndarray
    grip: float = 1.0
    events: tuple[Event, ...] = ()
    active: bool = False


@runtime_checkable
class Device(Protocol):
    """What the collection loop and the intervention source need from a device."""

    name: str

    def open(self) -> None:
        """Acquire the hardware. Absent/unreadable -> UsageError listing the devices found."""
        ...

    def read(self, obs: np.ndarray | None = None) -> Command:
        """The current command (non-blocking). ``obs`` [obs_dim] is used by the scripted device only."""
        ...

    def on_episode_start(self, obs: np.ndarray) -> None:
        """Called after env.reset: a new episode begins."""
        ...

    def on_episode_end(self, success: bool) -> None:
        """Called when an episode ended (env end or STOP); the review decision follows."""
        ...

    def close(self) -> None:
        ...


class DeviceBase:
    """Shared shaping (deadzone, sensitivity, clipping) and the gripper/intervention latches."""

    name = "device"

    def __init__(self, *, deadzone: float = 0.0, sensitivity: float = 1.0, rot_sensitivity: float = 1.0) -> None:
        self.deadzone = float(deadzone)
        self.sensitivity = float(sensitivity)
        self.rot_sensitivity = float(rot_sensitivity)
        self.grip = 1.0            # gripper latch: starts open (+1 = open, -1 = closed)
        self.intervening = False   # intervention latch (toggled by "intervene")

    # --- lifecycle defaults
    def open(self) -> None:
        pass

    def on_episode_start(self, obs: np.ndarray) -> None:
        pass

    def on_episode_end(self, success: bool) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- shaping
    def shape(self, raw: np.ndarray) -> np.ndarray:
        """raw [6] in [-1, 1] -> deadzoned, scaled, clipped motion [6] (float32)."""
        return shape_motion(raw, self.deadzone, self.sensitivity, self.rot_sensitivity)

    def command_events(self, command: str) -> list[Event]:
        """Apply a non-axis command name (see roborl.teleop.config.COMMANDS); return the events it makes."""
        if command == "grip_toggle":
            self.grip = -1.0 if self.grip > 0 else 1.0
        elif command == "grip_open":
            self.grip = 1.0
        elif command == "grip_close":
            self.grip = -1.0
        elif command == "intervene":
            self.intervening = not self.intervening
            return [Event.INTERVENE_ON if self.intervening else Event.INTERVENE_OFF]
        elif command == "intervene_on":
            self.intervening = True
            return [Event.INTERVENE_ON]
        elif command == "intervene_off":
            self.intervening = False
            return [Event.INTERVENE_OFF]
        else:
            try:
                return [Event(command)]
            except ValueError:
                return []
        return []


def shape_motion(raw: np.ndarray, deadzone: float, sensitivity: float, rot_sensitivity: float = 1.0) -> np.ndarray:
    """Deadzone with rescaling (continuous at the edge), then sensitivity, then clip.

    raw [6] -> [6] float32: v -> sign(v) * (|v| - dz) / (1 - dz) for |v| > dz, else 0.
    """
    v = np.clip(np.asarray(raw, dtype=np.float64).reshape(6), -1.0, 1.0)
    mag = np.abs(v)
    out = np.where(mag > deadzone, np.sign(v) * (mag - deadzone) / max(1.0 - deadzone, 1e-9), 0.0)
    out[:3] *= sensitivity
    out[3:] *= rot_sensitivity
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- action layout

def action_layout(env: Any, override: Sequence[str] | None = None) -> tuple[str, ...]:
    """Names of the env's action components, e.g. ("x", "y", "z", "grip").

    Order of precedence: ``override`` (TeleopConfig.action_layout), the env's
    ``unwrapped.action_layout`` attribute, then by size (4 = x,y,z,grip; 5 = x,y,z,yaw,grip).
    """
    dim = int(np.prod(env.action_space.shape))
    layout = tuple(override) if override else tuple(getattr(env.unwrapped, "action_layout", ()) or ())
    if not layout:
        layout = {4: ("x", "y", "z", "grip"), 5: ("x", "y", "z", "yaw", "grip"),
                  3: ("x", "y", "z"), 7: ("x", "y", "z", "roll", "pitch", "yaw", "grip")}.get(dim, ())
    if len(layout) != dim:
        raise UsageError(f"action_layout: env action has {dim} components but the layout names {len(layout)} "
                         f"({list(layout)}); set teleop action_layout=[...] to name them (x,y,z,roll,pitch,yaw,grip)")
    return layout


def to_env_action(cmd: Command, layout: Sequence[str]) -> np.ndarray:
    """Command -> env action [len(layout)] float32 in [-1, 1]."""
    out = np.empty(len(layout), dtype=np.float32)
    for i, name in enumerate(layout):
        out[i] = cmd.grip if name == "grip" else cmd.motion[MOTION_NAMES.index(name)]
    return np.clip(out, -1.0, 1.0)


def from_env_action(action: np.ndarray, layout: Sequence[str], events: tuple[Event, ...] = ()) -> Command:
    """Env action -> Command (inverse of :func:`to_env_action`; used by the scripted device)."""
    a = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
    motion = np.zeros(6, dtype=np.float32)
    grip = 1.0
    for i, name in enumerate(layout):
        if name == "grip":
            grip = float(a[i])
        else:
            motion[MOTION_NAMES.index(name)] = a[i]
    return Command(motion=motion, grip=grip, events=events, active=bool(np.any(a != 0)))


# ----------------------------------------------------------------------------- zero watchdog

class ZeroReportWarning(UserWarning):
    """A device reported only zeros for a long time while the operator was supposed to drive."""


class ZeroWatchdog:
    """Warns when a device reports only zeros for ``seconds`` while the operator should drive.

    A SpaceMouse over USB that silently sends zeros (hil-serl #40) or a dead keyboard
    (LeRobot #2346) otherwise records demos of a motionless arm. ``update`` is called once
    per control step; the warning is issued once per silent stretch (via ``warnings.warn``
    with :class:`ZeroReportWarning`) and its text returned so a status line can show it.
    """

    def __init__(self, seconds: float, device_name: str = "device", clock=time.monotonic) -> None:
        self.seconds = float(seconds)
        self.device_name = device_name
        self.clock = clock
        self.warnings = 0
        self._since: float | None = None   # start of the current all-zero stretch while driving
        self._warned = False

    def update(self, active: bool, driving: bool, now: float | None = None) -> str | None:
        if self.seconds <= 0:
            return None
        now = self.clock() if now is None else now
        if not driving or active:
            self._since = None
            self._warned = False
            return None
        if self._since is None:
            self._since = now
            return None
        if not self._warned and now - self._since >= self.seconds:
            self._warned = True
            self.warnings += 1
            msg = (f"{self.device_name} reported only zeros for {now - self._since:.1f} s while you are supposed to "
                   f"drive: is it connected, powered and focused (check permissions on /dev/hidraw* / input)?")
            warnings.warn(msg, ZeroReportWarning, stacklevel=2)
            return msg
        return None


def is_finite_command(cmd: Command) -> bool:
    return bool(np.all(np.isfinite(cmd.motion))) and math.isfinite(cmd.grip)


@dataclass
class _EventQueue:
    """Tiny FIFO helper for devices that collect events between reads."""

    items: list[Event] = field(default_factory=list)

    def push(self, events: Sequence[Event]) -> None:
        self.items.extend(events)

    def drain(self) -> tuple[Event, ...]:
        out, self.items = tuple(self.items), []
        return out
