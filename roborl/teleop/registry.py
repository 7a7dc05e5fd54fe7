"""The explicit device registry: name -> ``"module:factory"`` (imported lazily, so a missing
optional dependency such as pygame only breaks its own device).

A factory has the signature ``factory(cfg: TeleopConfig, env, layout: tuple[str, ...]) -> Device``.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Sequence

from roborl.errors import UsageError
from roborl.teleop.config import TeleopConfig
from roborl.teleop.device import Device

DEVICES: dict[str, str] = {
    "keyboard": "roborl.teleop.registry:_keyboard",
    "gamepad": "roborl.teleop.registry:_gamepad",
    "spacemouse": "roborl.teleop.registry:_spacemouse",
    "scripted": "roborl.teleop.registry:_scripted",
}


def _shaping(cfg: TeleopConfig) -> dict[str, float]:
    return {"deadzone": cfg.deadzone, "sensitivity": cfg.sensitivity, "rot_sensitivity": cfg.rot_sensitivity}


def _keyboard(cfg: TeleopConfig, env: Any, layout: Sequence[str]) -> Device:
    from roborl.teleop.keyboard import KeyboardDevice

    # Keys are digital (0 or 1): the deadzone has nothing to remove.
    return KeyboardDevice(cfg.keyboard, sensitivity=cfg.sensitivity, rot_sensitivity=cfg.rot_sensitivity)


def _gamepad(cfg: TeleopConfig, env: Any, layout: Sequence[str]) -> Device:
    from roborl.teleop.gamepad import GamepadDevice

    return GamepadDevice(cfg.gamepad, **_shaping(cfg))


def _spacemouse(cfg: TeleopConfig, env: Any, layout: Sequence[str]) -> Device:
    from roborl.teleop.spacemouse import SpaceMouseDevice

    return SpaceMouseDevice(cfg.spacemouse, **_shaping(cfg))


def _scripted(cfg: TeleopConfig, env: Any, layout: Sequence[str]) -> Device:
    from roborl.teleop.scripted import ScriptedDevice

    return ScriptedDevice(env, layout, cfg.scripted)


def make_device(cfg: TeleopConfig, env: Any = None, layout: Sequence[str] = ()) -> Device:
    """Build (not open) the device named by ``cfg.device``. Unknown name -> UsageError."""
    if cfg.device not in DEVICES:
        close = difflib.get_close_matches(cfg.device, list(DEVICES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"device: unknown device {cfg.device!r}{hint}; known: {', '.join(DEVICES)}")
    mod, fn = DEVICES[cfg.device].split(":")
    return getattr(importlib.import_module(mod), fn)(cfg, env, tuple(layout))
