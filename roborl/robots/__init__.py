"""Robots: the :class:`Robot` protocol, backends, the robot server and the ``robot://`` client env.

Layers (issue 7)::

    policy -> RobotEnv (robot://HOST:PORT, client.py) --ZeroMQ--> RobotServer (server.py)
           -> server-side safety (defense in depth) -> Robot backend (sim.py, or your adapter)

A :class:`Robot` is what an adapter for a new arm implements (see docs/robots.md). The
server owns the fixed-rate loop: it calls :meth:`Robot.send_action` when a command
arrives, :meth:`Robot.tick` once per control period, and :meth:`Robot.hold` when the
watchdog fires. Backends are looked up in the explicit :data:`BACKENDS` registry from a
``KIND:ARG`` string (``sim:roborl/Push-v0``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError

ActionMode = Literal["ee_delta", "joint"]


@dataclass
class RobotState:
    """What the robot reports after a control period.

    obs: [obs_dim] float32, the observation a policy sees.
    reward/terminated/truncated: task feedback when the backend can compute it (the sim twin,
    or a success detector on hardware); a plain hardware adapter reports 0/False/False.
    info: JSON-able extras (e.g. ``ee_pos`` [3]); ``advanced`` says whether time advanced.
    """

    obs: np.ndarray
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Robot(Protocol):
    """One arm, seen from the robot server. A context manager: ``with robot: ...`` connects/disconnects.

    Declares its spaces and control rate. Actions are in ``action_space`` (for
    ``ee_delta``: Box(-1, 1, (4,)) = [dx, dy, dz, grip], scaled by the adapter; for
    ``joint``: joint position targets). All methods must return within about one
    control period except :meth:`reset`, which may home the arm (seconds).
    """

    observation_space: spaces.Box
    action_space: spaces.Box
    control_hz: float
    action_mode: ActionMode
    max_episode_steps: int | None

    def connect(self) -> None:
        """Open the connection to the hardware (or build the simulation)."""
        ...

    def disconnect(self) -> None:
        """Hold the arm and release the connection. Idempotent."""
        ...

    def reset(self, seed: int | None = None) -> RobotState:
        """Home the arm, start a new episode, clear a latched e-stop; returns the first state."""
        ...

    def send_action(self, action: np.ndarray) -> None:
        """Command ``action`` [act_dim] (already safety-checked) until the next command. Non-blocking."""
        ...

    def tick(self) -> RobotState:
        """Called by the server once per control period: let one period of the command execute and read the state."""
        ...

    def observe(self) -> RobotState:
        """The latest state, without advancing anything."""
        ...

    def hold(self) -> None:
        """Replace the current command with 'stay where you are' (the watchdog's action)."""
        ...

    def estop(self) -> None:
        """Stop now; latched until :meth:`reset`."""
        ...

    def __enter__(self) -> "Robot":
        ...

    def __exit__(self, *exc: Any) -> None:
        ...


class RobotBase:
    """Optional base with the context-manager plumbing; adapters implement the rest of :class:`Robot`."""

    def connect(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def disconnect(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()


#: backend kind -> "module:factory"; ``factory(arg: str, **options) -> Robot`` (not yet connected).
BACKENDS: dict[str, str] = {
    "sim": "roborl.robots.sim:make_sim_robot",
}


def make_robot(backend: str, **options: Any) -> Robot:
    """``"sim:roborl/Push-v0"`` -> an unconnected :class:`Robot`. One-line UsageError on a bad spec."""
    kind, sep, arg = backend.partition(":")
    if not sep or not arg:
        raise UsageError(f"--backend {backend!r} is not KIND:ARG (e.g. sim:roborl/Push-v0); kinds: {sorted(BACKENDS)}")
    if kind not in BACKENDS:
        raise UsageError(f"--backend kind {kind!r} is unknown; known: {sorted(BACKENDS)} (see docs/robots.md to add one)")
    mod, fn = BACKENDS[kind].split(":")
    return getattr(importlib.import_module(mod), fn)(arg, **options)


__all__ = ["Robot", "RobotBase", "RobotState", "ActionMode", "BACKENDS", "make_robot"]
