"""Teleoperation configuration: one frozen, documented dataclass per device plus the session.

Conventions every device follows (see :mod:`roborl.teleop.device`):

- motion is an end-effector *delta* ``[dx, dy, dz, droll, dpitch, dyaw]`` in ``[-1, 1]``
  (1.0 = the env's documented max displacement per control step);
- ``grip`` is in ``[-1, 1]``: +1 = fully open, -1 = fully closed (the arm envs' convention);
- key/button names map to *commands* (see :data:`COMMANDS`), never to code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, non_negative, positive, unit_interval

# Command names a key or button can be bound to. Axis commands ("+x" ...) drive motion;
# the others are events (roborl.teleop.device.Event) or gripper commands.
COMMANDS: tuple[str, ...] = (
    "+x", "-x", "+y", "-y", "+z", "-z", "+yaw", "-yaw",
    "grip_toggle", "grip_open", "grip_close",
    "start", "stop", "keep", "success", "failure", "discard",
    "intervene", "intervene_on", "intervene_off", "quit",
)

# Layout names an env action component can have (see TeleopConfig.action_layout).
LAYOUT_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "grip")


def _commands_ok(mapping: dict[str, str]) -> str | None:
    bad = [v for v in mapping.values() if v not in COMMANDS]
    return None if not bad else f"unknown command {bad[0]!r} (known: {', '.join(COMMANDS)})"


def _layout_ok(layout: tuple[str, ...] | None) -> str | None:
    if layout is None:
        return None
    bad = [v for v in layout if v not in LAYOUT_NAMES]
    if bad:
        return f"unknown component {bad[0]!r} (known: {', '.join(LAYOUT_NAMES)})"
    if len(set(layout)) != len(layout):
        return "components must be unique"
    return None


# Terminal keys: single characters, plus the names "enter", "space", "backspace", "esc",
# "up", "down", "left", "right" (arrow keys arrive as ESC [ A..D sequences).
DEFAULT_KEYMAP: dict[str, str] = {
    "w": "+x", "s": "-x", "a": "+y", "d": "-y", "r": "+z", "f": "-z", "q": "+yaw", "e": "-yaw",
    "up": "+x", "down": "-x", "left": "+y", "right": "-y",
    "space": "grip_toggle", "o": "grip_open", "c": "grip_close",
    "enter": "start", "x": "stop", "k": "keep", "y": "success", "n": "failure",
    "backspace": "discard", "z": "discard", "i": "intervene", "esc": "quit",
}


@dataclass(frozen=True)
class KeyboardConfig:
    """Terminal keyboard (no display server: raw tty via termios, or any byte stream)."""

    hold_s: float = field(0.3, doc="Seconds a key press keeps its axis driven. Terminals send no key-up events; "
                                   "the OS autorepeat (~30 Hz after ~0.25-0.5 s) refreshes a held key.", check=positive)
    keymap: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYMAP),
                                   doc="Key -> command (see roborl.teleop.config.COMMANDS).", check=_commands_ok)


@dataclass(frozen=True)
class GamepadConfig:
    """pygame joystick (Xbox-style layout by default; SDL's axis/button numbering)."""

    index: int = field(0, doc="Joystick index (pygame.joystick.Joystick(index)).", check=non_negative)
    axes: dict[str, int] = field(default_factory=lambda: {"x": 1, "y": 0, "z": 4, "yaw": 3},
                                 doc="Motion component (x, y, z, roll, pitch, yaw) -> joystick axis index.")
    invert: tuple[str, ...] = field(("x", "y", "z", "yaw"),
                                    doc="Components whose axis is negated (SDL sticks report up/left as negative).")
    grip_axis: int | None = field(5, doc="Analog axis driving the gripper (right trigger: -1 released .. +1 pressed -> "
                                         "grip +1 open .. -1 closed); null = buttons only.")
    buttons: dict[str, str] = field(
        default_factory=lambda: {"0": "success", "1": "discard", "2": "failure", "3": "intervene",
                                 "4": "grip_open", "5": "grip_close", "6": "stop", "7": "start", "8": "quit"},
        doc="Button index -> command (see roborl.teleop.config.COMMANDS).", check=_commands_ok)


@dataclass(frozen=True)
class SpaceMouseConfig:
    """3Dconnexion SpaceMouse read through hidapi (import hid)."""

    path: str | None = field(None, doc="HID path to open (as listed in the error message); null = first SpaceMouse found.")
    full_scale: float = field(350.0, doc="Raw axis count that maps to 1.0 (SpaceMouse reports about +-350).", check=positive)
    buttons: dict[str, str] = field(default_factory=lambda: {"0": "grip_toggle", "1": "intervene"},
                                    doc="Button index -> command.", check=_commands_ok)


@dataclass(frozen=True)
class ScriptedConfig:
    """Replays the task's scripted expert (roborl.envs.expert); for tests and headless collection."""

    noise: float = field(0.0, doc="Std of the Gaussian noise the expert adds to its actions.", check=non_negative)
    decisions: tuple[Literal["keep", "success", "failure", "discard"], ...] = field(
        ("keep",), doc="Review decision per episode, cycled: keep (label from the env's is_success), "
                       "success, failure, or discard.")
    seed: int = field(0, doc="Seed of the expert's noise.", check=non_negative)


@dataclass(frozen=True)
class TeleopConfig:
    """A teleoperation session: device, control rate, shaping, watchdog."""

    device: str = field("keyboard", doc="Device name (roborl.teleop.DEVICES): keyboard, gamepad, spacemouse, scripted.")
    hz: float = field(10.0, doc="Control rate of the fixed-rate loop (Hz); match the env's control rate.", check=positive)
    sensitivity: float = field(1.0, doc="Scale of translation commands (after the deadzone), clipped to [-1, 1].", check=positive)
    rot_sensitivity: float = field(1.0, doc="Scale of rotation commands (after the deadzone).", check=positive)
    deadzone: float = field(0.05, doc="Analog inputs with |v| below this are zero; the rest is rescaled to keep "
                                      "the response continuous.", check=lambda v: None if 0.0 <= v < 1.0 else "must be in [0, 1)")
    zero_warn_s: float = field(3.0, doc="Warn when the device reports only zeros for this many seconds while the "
                                        "operator is supposed to drive (hil-serl #40, LeRobot #2346). 0 = off.", check=non_negative)
    action_layout: tuple[str, ...] | None = field(
        None, doc="Names of the env's action components, e.g. [x, y, z, grip]; null = from the env "
                  "(attribute action_layout) or by size: 4 = x,y,z,grip; 5 = x,y,z,yaw,grip.", check=_layout_ok)
    auto_start: bool = field(False, doc="Start the next episode without waiting for the start event.")
    max_episode_steps: int | None = field(None, doc="End an episode after this many steps (null = the env's limit).", check=positive)
    viewer: Literal["auto", "on", "off"] = field("auto", doc="MuJoCo passive viewer: auto = when a display is available.")
    keyboard: KeyboardConfig = field(default_factory=KeyboardConfig, doc="Keyboard device.")
    gamepad: GamepadConfig = field(default_factory=GamepadConfig, doc="Gamepad device.")
    spacemouse: SpaceMouseConfig = field(default_factory=SpaceMouseConfig, doc="SpaceMouse device.")
    scripted: ScriptedConfig = field(default_factory=ScriptedConfig, doc="Scripted device.")


@dataclass(frozen=True)
class InterventionConfig:
    """Human (or scripted) interventions during online training (HIL-SERL, Luo et al. 2024)."""

    source: Literal["none", "device", "scripted"] = field("none", doc="none, a teleop device, or the scripted expert.")
    copy_to_demo: bool = field(True, doc="Also store each intervention segment as an episode of the demo partition "
                                         "(HIL-SERL adds intervention data to both buffers).")
    every: int = field(0, doc="scripted: take over at the start of every `every`-th episode (0 = never).", check=non_negative)
    start_step: int = field(10, doc="scripted: episode step at which the takeover starts.", check=non_negative)
    duration: int = field(20, doc="scripted: steps each takeover lasts.", check=positive)
    probability: float = field(0.0, doc="scripted: chance per step of starting a takeover (0 = schedule only).",
                               check=unit_interval)
    noise: float = field(0.0, doc="scripted: expert action noise std.", check=non_negative)


@dataclass(frozen=True)
class ResetConfig:
    """How episodes are reset: by the env (sim, or a robot that resets itself) or by a person.

    Meant for the run config's ``env`` section (``env.reset_mode``, ``env.reset_timeout_s``); it is
    applied by :func:`roborl.teleop.reset.apply_reset` on the outside of the env stack.
    """

    reset_mode: Literal["auto", "manual"] = field(
        "auto", doc="auto = env.reset() resets the scene; manual = the robot holds and the operator resets the "
                    "scene by hand, then presses START (roborl.teleop.reset.ManualReset).")
    reset_timeout_s: float = field(300.0, doc="manual: seconds to wait for START before the run pauses with a "
                                              "one-line ResetTimeout (the loop saves its state; resetting again "
                                              "resumes the wait).", check=positive)
