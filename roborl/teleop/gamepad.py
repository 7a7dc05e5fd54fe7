"""Gamepad device through pygame's joystick events (optional extra: ``pip install roborl[teleop]``).

State is built from pygame's event queue (JOYAXISMOTION / JOYBUTTONDOWN), so any event
source works: a real joystick, or events posted with ``pygame.event.post`` (tests use the
dummy video driver). Axis mapping, inversion, deadzone and button bindings come from
:class:`~roborl.teleop.config.GamepadConfig`.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from roborl.errors import UsageError
from roborl.teleop.config import GamepadConfig
from roborl.teleop.device import MOTION_NAMES, Command, DeviceBase, _EventQueue


def _import_pygame() -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    # Headless: SDL still delivers joystick events with the dummy video driver.
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    # Joystick events must arrive even though no pygame window has focus.
    os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
    try:
        import pygame
    except ImportError:
        raise UsageError("device 'gamepad' needs pygame (found: not installed); pip install 'roborl[teleop]'") from None
    return pygame


class GamepadDevice(DeviceBase):
    """pygame joystick.

    ``require_joystick=False`` accepts events from any source without opening a physical
    joystick (used with posted events in tests).
    """

    name = "gamepad"

    def __init__(self, cfg: GamepadConfig | None = None, *, deadzone: float = 0.05, sensitivity: float = 1.0,
                 rot_sensitivity: float = 1.0, require_joystick: bool = True) -> None:
        super().__init__(deadzone=deadzone, sensitivity=sensitivity, rot_sensitivity=rot_sensitivity)
        self.cfg = cfg or GamepadConfig()
        for comp in self.cfg.axes:
            if comp not in MOTION_NAMES:
                raise UsageError(f"gamepad.axes: unknown component {comp!r} (known: {', '.join(MOTION_NAMES)})")
        self.require_joystick = require_joystick
        self._pg: Any = None
        self._joy: Any = None
        self._axes: dict[int, float] = {}
        self._events = _EventQueue()
        self._fresh = False

    def open(self) -> None:
        pg = self._pg = _import_pygame()
        pg.display.init()   # the event queue lives in the video subsystem
        pg.joystick.init()
        if not self.require_joystick:
            return
        n = pg.joystick.get_count()
        found = [pg.joystick.Joystick(i).get_name() for i in range(n)]
        if self.cfg.index >= n:
            listing = ", ".join(f"{i}: {name}" for i, name in enumerate(found)) or "none"
            raise UsageError(f"device 'gamepad': no joystick at index {self.cfg.index} (found: {listing}); "
                             f"set teleop gamepad.index or plug one in")
        self._joy = pg.joystick.Joystick(self.cfg.index)
        self._joy.init()
        for a in range(self._joy.get_numaxes()):
            self._axes[a] = float(self._joy.get_axis(a))

    def close(self) -> None:
        if self._pg is not None:
            if self._joy is not None:
                self._joy.quit()
                self._joy = None
            self._pg.joystick.quit()
            self._pg.display.quit()
            self._pg = None

    def _mine(self, ev: Any) -> bool:
        if self._joy is None:
            return True
        return getattr(ev, "instance_id", getattr(ev, "joy", None)) == self._joy.get_instance_id()

    def pump(self) -> None:
        """Drain pygame's joystick events into the device state."""
        pg = self._pg
        if pg is None:
            raise UsageError("device 'gamepad': read() before open()")
        for ev in pg.event.get((pg.JOYAXISMOTION, pg.JOYBUTTONDOWN, pg.JOYDEVICEREMOVED)):
            if ev.type == pg.JOYDEVICEREMOVED:
                if self._joy is not None and getattr(ev, "instance_id", None) == self._joy.get_instance_id():
                    self._axes = {a: 0.0 for a in self._axes}  # unplugged: neutral (the zero watchdog will warn)
                continue
            if not self._mine(ev):
                continue
            if ev.type == pg.JOYAXISMOTION:
                self._axes[int(ev.axis)] = float(ev.value)
                if self.cfg.grip_axis is not None and int(ev.axis) == self.cfg.grip_axis:
                    self.grip = float(np.clip(-ev.value, -1.0, 1.0))  # pressed trigger closes
                    self._fresh = True
            elif ev.type == pg.JOYBUTTONDOWN:
                self._fresh = True
                command = self.cfg.buttons.get(str(int(ev.button)))
                if command is not None:
                    self._events.push(self.command_events(command))

    def read(self, obs: np.ndarray | None = None) -> Command:
        self.pump()
        raw = np.zeros(6)
        for comp, axis in self.cfg.axes.items():
            v = self._axes.get(int(axis), 0.0)
            raw[MOTION_NAMES.index(comp)] = -v if comp in self.cfg.invert else v
        motion = self.shape(raw)
        active = self._fresh or bool(np.any(motion != 0))
        self._fresh = False
        return Command(motion=motion, grip=self.grip, events=self._events.drain(), active=active)
