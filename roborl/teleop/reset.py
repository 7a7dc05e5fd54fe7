"""Manual resets: a person puts the scene back between episodes (HIL-SERL-style robot training).

:class:`ManualReset` wraps the env stack. On ``reset()`` it sends the robot nothing (the arm
holds where it is; a robot server's command watchdog keeps it safe while no command arrives),
prints one prompt line, and polls the operator's device until ``Event.START`` (keyboard
``enter``, gamepad ``start``); only then does it call the inner ``env.reset()`` (which may move
the arm home: pressing START says "I am clear of the robot").

Past ``timeout_s`` it raises :class:`ResetTimeout` instead of blocking forever. A robot engineer
wants an unattended wait to end cleanly rather than hang: the loop catches it, commits the
store, saves a checkpoint and either stops (the run resumes from run.dir) or calls ``reset()``
again to keep waiting. Uncaught, it is a UsageError: the CLI prints one line and exits 2.
``Event.QUIT`` during the wait raises :class:`ResetAborted` the same way.

Only ``device.read(obs)`` is called (never ``on_episode_start`` / ``on_episode_end``: those stay
with the loop that owns the device). The scripted device answers with ``START`` whenever it is
between episodes, so headless tests and collection go through the same path.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import gymnasium as gym

from roborl.errors import UsageError
from roborl.teleop.config import ResetConfig
from roborl.teleop.device import Device, Event

__all__ = ["ManualReset", "ResetTimeout", "ResetAborted", "apply_reset"]


class ResetTimeout(UsageError):
    """No START within the reset timeout; the robot is holding and the run is paused."""


class ResetAborted(UsageError):
    """The operator sent QUIT while the scene was being reset."""


def _start_hint(device: Any) -> str:
    """'enter' / 'button 7' ...: how to send START on this device, from its key or button map."""
    cfg = getattr(device, "cfg", None)
    for attr, what in (("keymap", "key"), ("buttons", "button")):
        mapping = getattr(cfg, attr, None)
        if isinstance(mapping, dict):
            keys = [k for k, v in mapping.items() if v == "start"]
            if keys:
                return f"{what} {keys[0]}"
    return "START"


class ManualReset(gym.Wrapper):
    """Wait for the operator's START before each ``reset()`` (see the module docstring).

    Args:
        env: the env stack to wrap (outermost).
        device: an opened teleop device (roborl.teleop.device.Device).
        timeout_s: seconds to wait for START before raising :class:`ResetTimeout`.
        prompt: where the one prompt line goes (``print`` on a terminal, a logger, a list's append in tests).
        poll_s: device polling period while waiting.
    """

    def __init__(self, env: gym.Env, device: Device, timeout_s: float = 300.0, prompt: Callable[[str], Any] = print,
                 poll_s: float = 0.02, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(env)
        if not timeout_s > 0:
            raise UsageError(f"env.reset_timeout_s: must be > 0, got {timeout_s}")
        self.device = device
        self.timeout_s = float(timeout_s)
        self.prompt = prompt
        self.poll_s = float(poll_s)
        self.clock = clock
        self.resets = 0
        self._last_obs: Any = None

    def wait_for_start(self) -> float:
        """Block until the device sends START; returns the seconds waited. Raises ResetTimeout / ResetAborted."""
        name = getattr(self.device, "name", "device")
        self.prompt(f"reset: the robot is holding; put the scene back for episode {self.resets + 1}, "
                    f"then press {_start_hint(self.device)} on the {name} (timeout {self.timeout_s:.0f} s)")
        t0 = self.clock()
        while True:
            events = self.device.read(self._last_obs).events
            if Event.QUIT in events:
                raise ResetAborted(f"reset: the operator quit ({name}) while the scene was being reset")
            if Event.START in events:
                return self.clock() - t0
            waited = self.clock() - t0
            if waited >= self.timeout_s:
                raise ResetTimeout(f"reset: no START from the {name} within {self.timeout_s:.0f} s; the robot is "
                                   f"holding and the run is paused (env.reset_timeout_s)")
            time.sleep(min(self.poll_s, max(0.0, self.timeout_s - waited)))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        waited = self.wait_for_start()
        obs, info = self.env.reset(seed=seed, options=options)
        self.resets += 1
        self._last_obs = obs
        info = dict(info)
        info["reset_wait_s"] = waited
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_obs = obs
        return obs, reward, terminated, truncated, info


def apply_reset(env: gym.Env, cfg: ResetConfig, device: Device | None, prompt: Callable[[str], Any] = print) -> gym.Env:
    """Wrap ``env`` in :class:`ManualReset` when ``cfg.reset_mode == "manual"`` (else return it unchanged).
    Manual resets need an operator device: None -> UsageError."""
    if cfg.reset_mode != "manual":
        return env
    if device is None:
        raise UsageError("env.reset_mode=manual needs an operator device (teleop.device, e.g. keyboard) to press START")
    return ManualReset(env, device, cfg.reset_timeout_s, prompt=prompt)
