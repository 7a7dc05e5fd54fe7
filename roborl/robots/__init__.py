"""Robots: the :class:`Robot` protocol, backends, the robot server and the ``robot://`` client env.

Layers::

    policy -> RobotEnv (robot://HOST:PORT, client.py) --ZeroMQ--> RobotServer (server.py)
           -> server-side limits (limits.py, every backend) -> Robot backend (sim.py, or your adapter)

A :class:`Robot` is what an adapter for a new arm implements (see docs/robots.md). The
server owns the fixed-rate loop: it calls :meth:`Robot.send_action` when a command
arrives, :meth:`Robot.tick` once per control period, and :meth:`Robot.hold` when the
watchdog fires. A robot declares its :class:`RobotLimits`; the server enforces them before
any command reaches the adapter. Backends (:func:`make_robot`): a kind of the explicit
:data:`BACKENDS` registry (``sim:roborl/Push-v0``), a name in the ``roborl.robots`` entry-point
group of an installed package (``myarm:ARG``), or a module path (``mypkg.arm:make[:ARG]``).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from roborl.config import field as cfield
from roborl.errors import UsageError

ActionMode = Literal["ee_delta", "joint"]


@dataclass
class RobotState:
    """What the robot reports after a control period.

    obs: the observation a policy sees: [obs_dim] float32, or a (nested) dict of arrays matching a
    Dict ``observation_space`` (``{"proprio": f32[P], "pixels": {"front": u8[H, W, 3], ...}}``).
    reward/terminated/truncated: task feedback when the backend can compute it (the sim twin,
    or a success detector on hardware); a plain hardware adapter reports 0/False/False.
    info: JSON-able extras (e.g. ``ee_pos`` [3]); ``advanced`` says whether time advanced.
    """

    obs: Any
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RobotLimits:
    """What the robot server enforces before any command reaches the adapter (``Robot.limits``).

    For ``ee_delta`` robots, ``action[:3] * ee_scale`` is the commanded end-effector motion
    [3] (m) for one control period; the server projects ``ee_pos + motion`` into the workspace
    box (``ee_pos``: the robot's reported ``info["ee_pos"]`` [3]), then scales the motion down
    to ``max_step`` and, when the adapter provides ``arm_jacobian()`` [3, n_joints], to the
    joint-velocity limits. Any field may be None (that check is off).
    """

    workspace_low: tuple[float, float, float] | None = cfield(
        None, doc="Lower corner of the end-effector box (x, y, z), metres, in the frame of info['ee_pos'].")
    workspace_high: tuple[float, float, float] | None = cfield(
        None, doc="Upper corner of the end-effector box (x, y, z), metres.")
    ee_scale: float | None = cfield(
        None, doc="Metres of end-effector motion per unit of action[:3] per command (ee_delta robots).")
    max_step: float | None = cfield(None, doc="Maximum end-effector motion per command (norm, metres).")
    max_joint_vel: tuple[float, ...] | None = cfield(
        None, doc="Maximum joint velocities (rad/s), one per arm joint; enforced when the robot has arm_jacobian().")

    def __post_init__(self) -> None:
        def vec(name: str, v: Any, n: int | None) -> tuple[float, ...] | None:
            if v is None:
                return None
            try:
                t = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise UsageError(f"RobotLimits.{name}: expected a sequence of numbers, got {v!r}") from None
            if (n is not None and len(t) != n) or not t or not all(math.isfinite(x) for x in t):
                raise UsageError(f"RobotLimits.{name}: expected {n or 'some'} finite numbers, got {v!r}")
            object.__setattr__(self, name, t)
            return t

        lo = vec("workspace_low", self.workspace_low, 3)
        hi = vec("workspace_high", self.workspace_high, 3)
        if (lo is None) != (hi is None):
            raise UsageError("RobotLimits: workspace_low and workspace_high must be given together")
        if lo is not None and hi is not None and any(a >= b for a, b in zip(lo, hi)):
            raise UsageError(f"RobotLimits: workspace_low {lo} must be below workspace_high {hi} on every axis")
        jv = vec("max_joint_vel", self.max_joint_vel, None)
        if jv is not None and any(v <= 0 for v in jv):
            raise UsageError(f"RobotLimits.max_joint_vel: every entry must be > 0, got {jv}")
        for name in ("ee_scale", "max_step"):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise UsageError(f"RobotLimits.{name}: must be a finite number > 0, got {v!r}")
                object.__setattr__(self, name, float(v))
        if (lo is not None or self.max_step is not None or jv is not None) and self.ee_scale is None:
            raise UsageError("RobotLimits: a workspace, max_step or max_joint_vel needs ee_scale "
                             "(metres per unit action)")

    @property
    def declared(self) -> bool:
        """Whether anything beyond the action box is limited."""
        return any(v is not None for v in (self.workspace_low, self.max_step, self.max_joint_vel))


@runtime_checkable
class Robot(Protocol):
    """One arm, seen from the robot server. A context manager: ``with robot: ...`` connects/disconnects.

    Declares its spaces and control rate. Actions are in ``action_space`` (for
    ``ee_delta``: Box(-1, 1, (4,)) = [dx, dy, dz, grip], scaled by the adapter; for
    ``joint``: joint position targets). All methods must return within about one
    control period except :meth:`reset`, which may home the arm (seconds).

    ``limits`` (None = none declared: the server warns, ``--require-limits`` refuses) are
    enforced by the server before :meth:`send_action`; a robot with a workspace must report
    ``info["ee_pos"]`` [3] in every state. ``holds_last_command``: a command keeps acting on
    later periods until the next one (velocity-like hardware: True); the server then re-checks
    it against the limits before each such period.
    """

    observation_space: spaces.Space  # a Box, or a (nested) Dict of Boxes (proprio + uint8 camera images)
    action_space: spaces.Box
    control_hz: float
    action_mode: ActionMode
    max_episode_steps: int | None
    limits: RobotLimits | None

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

    limits: RobotLimits | None = None
    holds_last_command: bool = True

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
#: importlib.metadata entry-point group through which installed packages add backends:
#: ``[project.entry-points."roborl.robots"] myarm = "mypkg.arm:make"`` -> ``--backend myarm:ARG``.
ENTRY_POINT_GROUP = "roborl.robots"
#: what a backend must provide to be served (attributes may be set by ``connect``).
ROBOT_METHODS = ("connect", "disconnect", "reset", "send_action", "tick", "observe", "hold", "estop",
                 "__enter__", "__exit__")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _import_factory(backend: str, module: str, attr: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise UsageError(f"--backend {backend!r}: no module named {module!r} (is it installed or on "
                             f"PYTHONPATH?)") from None
        raise UsageError(f"--backend {backend!r}: importing {module!r} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - a user's module may raise anything on import
        raise UsageError(f"--backend {backend!r}: importing {module!r} failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    fn = getattr(mod, attr, None) if attr.isidentifier() else None
    if not callable(fn):
        raise UsageError(f"--backend {backend!r}: module {module!r} has no factory {attr!r}")
    return fn


def _is_module_path(head: str) -> bool:
    """``a.b.c`` (dotted identifiers), or a bare name that is an importable top-level module."""
    parts = head.split(".")
    if not all(p.isidentifier() for p in parts):
        return False
    if len(parts) > 1:
        return True
    try:
        return importlib.util.find_spec(head) is not None
    except (ImportError, ValueError):
        return False


def missing_robot_methods(obj: Any) -> list[str]:
    """The :data:`ROBOT_METHODS` that ``obj`` lacks (empty for a usable backend)."""
    return [m for m in ROBOT_METHODS if not callable(getattr(obj, m, None))]


def make_robot(backend: str, **options: Any) -> Robot:
    """A backend spec -> an unconnected :class:`Robot`. One-line UsageError on any bad spec.

    Specs: ``KIND:ARG`` for a kind of :data:`BACKENDS` (``sim:roborl/Push-v0``) or a name in
    the ``roborl.robots`` entry-point group; ``package.module:factory[:ARG]`` for any
    importable module (the factory is called as ``factory(ARG, **options)``, or
    ``factory(**options)`` without ARG).
    """
    head, sep, rest = backend.partition(":")
    known = sorted(BACKENDS)
    if not sep or not head or not rest:
        raise UsageError(f"--backend {backend!r} is not KIND:ARG or package.module:factory[:ARG] "
                         f"(e.g. sim:roborl/Push-v0); kinds: {known}")
    if head in BACKENDS:
        mod, fn = BACKENDS[head].split(":")
        factory, arg, has_arg = _import_factory(backend, mod, fn), rest, True
    else:
        try:
            eps = _entry_points()
        except Exception:  # noqa: BLE001 - a broken installed distribution must not block the others
            eps = {}
        if head in eps:
            try:
                factory = eps[head].load()
            except Exception as e:  # noqa: BLE001
                raise UsageError(f"--backend {backend!r}: entry point {head!r} ({eps[head].value}) failed to "
                                 f"load ({type(e).__name__}: {e})") from None
            arg, has_arg = rest, True
        elif _is_module_path(head):
            attr, sep2, arg = rest.partition(":")
            factory, has_arg = _import_factory(backend, head, attr), bool(sep2)
        else:
            raise UsageError(f"--backend kind {head!r} is unknown; known: {known}, entry points: "
                             f"{sorted(eps)}, or a module path package.module:factory[:ARG] (see docs/robots.md)")
    try:
        robot = factory(arg, **options) if has_arg else factory(**options)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - one line, whatever the adapter's constructor raised
        raise UsageError(f"--backend {backend!r}: the factory failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    missing = missing_robot_methods(robot)
    if missing:
        raise UsageError(f"--backend {backend!r}: the factory returned a {type(robot).__name__}, which is not a "
                         f"Robot (missing: {', '.join(missing)})")
    return robot


__all__ = ["Robot", "RobotBase", "RobotState", "RobotLimits", "ActionMode", "BACKENDS", "ENTRY_POINT_GROUP",
           "make_robot", "missing_robot_methods"]
