"""``sim:ENV_ID``: a :class:`~roborl.robots.Robot` over one of our MuJoCo tasks (the digital twin).

The server treats it exactly like hardware: :meth:`SimRobot.send_action` sets the command,
:meth:`SimRobot.tick` executes one control period of physics (one ``env.step``) and reads
the state, :meth:`SimRobot.hold` replaces the command by "stay" (zero end-effector delta,
gripper unchanged; zeros for joint/torque envs).

Two clocks:

* ``realtime`` (default, a digital twin): every server tick advances physics, with the
  latest command (a velocity-like end-effector delta keeps acting, as on hardware) or
  the hold command after the watchdog fires. A client that misses a tick sees the world
  move on without it, as on a real arm.
* ``lockstep``: physics only advances on ticks that carry a fresh command, so a policy
  run through ``robot://`` reproduces ``env.step`` exactly regardless of client speed
  (reproducible evaluation on a busy machine). The watchdog still reports.

After ``terminated``/``truncated`` the twin stops advancing until the next reset, and an
e-stop freezes it until reset.

The env is built like ``roborl train`` builds it (``env_config``: the ``env`` section, filled by
the same ``env.*`` key=value overrides), so demos, the served twin and training see one env.
Observations are a Box or a (nested) Dict of Boxes (``obs_mode=proprio+pixels``:
``{"proprio": f32[P], "pixels": {"front": u8[H, W, 3], ...}}``). ``blind=True`` (the blind twin)
defaults our arm tasks to ``obs_mode=proprio+pixels`` and refuses ``obs_mode=state``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError
from roborl.robots import ActionMode, RobotBase, RobotLimits, RobotState
from roborl.robots.transport import jsonable

SIM_CLOCKS = ("realtime", "lockstep")
#: the blind twin's observation mode for our arm tasks unless the user sets one: what a real arm measures.
BLIND_OBS_MODE = "proprio+pixels"


def _make_env(env_id: str, env_kwargs: dict[str, Any], env_config: Any = None) -> gym.Env:
    import roborl  # noqa: F401 - registers roborl/<Task>-v0

    if env_id.startswith("robot://"):
        raise UsageError(f"--backend sim:{env_id}: a sim backend needs a simulated env id, not a robot:// URL")
    try:
        from roborl.envs.make import make_env
    except ModuleNotFoundError:  # env glue not installed: plain gymnasium
        make_env = None  # type: ignore[assignment]
    if env_config is not None:
        from roborl.envs.config import build_env

        # The same env stack as `roborl train` with the same env.* section (safety, DR, history, ...).
        env = build_env(dataclasses.replace(env_config, id=env_id, kwargs={**env_config.kwargs, **env_kwargs}))
    elif make_env is not None:
        env = make_env(env_id, **env_kwargs)
    else:
        try:
            env = gym.make(env_id, **env_kwargs)
        except gym.error.Error as e:
            raise UsageError(f"--backend sim:{env_id}: {e}") from None
    # The robot side always has the arm's safety layer (defense in depth: the client may
    # have its own too). apply_safety is a no-op when the task already carries one.
    try:
        from roborl.envs.config import apply_safety
        from roborl.envs.safety import SafetyConfig
    except ImportError:  # pragma: no cover - env glue not installed
        return env
    return apply_safety(env, SafetyConfig())


def _sim_limits(env: gym.Env) -> RobotLimits | None:
    """The twin's limits, read from the task: its workspace box, metres per unit action, and the
    max step / joint-velocity limits of its SafetyLayer (the default SafetyConfig's if none)."""
    u = env.unwrapped
    if not all(hasattr(u, a) for a in ("workspace_bounds", "ee_pos", "max_delta")):
        return None
    from roborl.envs.safety import SafetyConfig, SafetyLayer

    cfg, e = SafetyConfig(), env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, SafetyLayer):
            cfg = e.config
            break
        e = e.env
    low, high = u.workspace_bounds
    jv = getattr(u, "joint_vel_limits", None)
    return RobotLimits(
        workspace_low=tuple(float(v) for v in low), workspace_high=tuple(float(v) for v in high),
        ee_scale=float(u.max_delta), max_step=cfg.max_step,
        max_joint_vel=(tuple(float(v) * cfg.joint_vel_scale for v in np.ravel(jv))
                       if jv is not None and cfg.joint_vel_scale is not None and hasattr(u, "arm_jacobian") else None))


class SimRobot(RobotBase):
    """A simulated arm behind the robot server. See the module docstring for the clocks."""

    def __init__(self, env_id: str, *, clock: str = "realtime", control_hz: float | None = None,
                 env_kwargs: dict[str, Any] | None = None, hold_action: np.ndarray | None = None,
                 env_config: Any = None, blind: bool = False) -> None:
        if clock not in SIM_CLOCKS:
            raise UsageError(f"--sim-clock {clock!r} is not one of {SIM_CLOCKS}")
        self.env_id = env_id
        self.clock = clock
        self._hz_override = control_hz
        self._env_kwargs = dict(env_kwargs or {})
        self._env_config = env_config   # roborl.envs.config.EnvConfig (the env.* section) or None
        self.blind = bool(blind)
        self._hold_override = None if hold_action is None else np.asarray(hold_action, np.float32)
        self.env: gym.Env | None = None
        self._cmd: np.ndarray | None = None
        self._fresh = False
        self._estopped = False
        self._over = True
        self._state: RobotState | None = None
        self.steps = 0  # env.step calls since connect (for tests and stats)

    # -- lifecycle
    def connect(self) -> None:
        if self.env is not None:
            return
        kwargs = dict(self._env_kwargs)
        user_kwargs = {**(self._env_config.kwargs if self._env_config is not None else {}), **kwargs}
        if self.blind and "obs_mode" not in user_kwargs and _is_arm_task(self.env_id):
            kwargs["obs_mode"] = BLIND_OBS_MODE
        env = _make_env(self.env_id, kwargs, self._env_config)
        mode = getattr(env.unwrapped, "obs_mode", None)
        if self.blind and mode == "state":
            env.close()
            raise UsageError(f"--blind: sim:{self.env_id} with obs_mode=state serves the object and goal state a real "
                             f"arm cannot measure; use env.kwargs.obs_mode=proprio+pixels (or proprio)")
        if not _servable(env.observation_space) or not isinstance(env.action_space, spaces.Box):
            env.close()
            raise UsageError(f"--backend sim:{self.env_id}: the robot server needs a Box (or a Dict of Box) "
                             f"observation space and a Box action space, got {env.observation_space} / "
                             f"{env.action_space}")
        self.env = env
        self.observation_space: spaces.Space = env.observation_space
        self.action_space: spaces.Box = env.action_space
        u = env.unwrapped
        dt = getattr(u, "control_dt", None) or getattr(u, "dt", None)
        self.control_hz = float(self._hz_override or (1.0 / float(dt) if dt else 20.0))
        self.action_mode: ActionMode = "ee_delta" if hasattr(u, "ee_pos") else "joint"
        self.max_episode_steps = getattr(env.spec, "max_episode_steps", None) if env.spec else None
        self.limits = _sim_limits(env)
        # Observation / info keys the task calls privileged (the blind twin's filter; see robots/blind.py).
        from roborl.envs.spaces import privileged_keys

        obs_keys, info_keys = privileged_keys(env)
        if isinstance(env.observation_space, spaces.Dict):
            self.privileged_obs_keys = tuple(str(k) for k in obs_keys)
        else:
            # A flat vector has no entries to drop: it is privileged as a whole when the task's state
            # mode is (its object/goal state); proprio-only flat modes declare nothing.
            self.privileged_obs_keys = tuple(str(k) for k in obs_keys) if mode in ("state",) else ()
        self.privileged_info_keys = tuple(str(k) for k in info_keys)
        # lockstep: a command acts for exactly one period, so nothing repeats it
        self.holds_last_command = self.clock == "realtime"
        self._hold = self._hold_vector(None)
        self._cmd = self._hold.copy()

    def disconnect(self) -> None:
        if self.env is not None:
            self.hold()
            self.env.close()
            self.env = None

    # -- helpers
    def _hold_vector(self, last: np.ndarray | None) -> np.ndarray:
        if self._hold_override is not None:
            return self._hold_override.copy()
        low, high = self.action_space.low, self.action_space.high
        hold = np.clip(np.zeros(self.action_space.shape, np.float32), low, high).astype(np.float32)
        if self.action_mode == "ee_delta" and last is not None and hold.shape == (4,):
            hold[3] = last[3]  # keep the gripper as it is: opening it would drop the object
        return hold

    def _info(self, info: dict[str, Any], advanced: bool) -> dict[str, Any]:
        out = jsonable(info) or {}
        out["advanced"] = advanced
        ee = getattr(self.env.unwrapped, "ee_pos", None) if self.env is not None else None
        if ee is not None:
            out["ee_pos"] = [float(x) for x in np.asarray(ee).ravel()[:3]]
        return out

    def arm_jacobian(self) -> np.ndarray:
        """Position Jacobian of the end effector w.r.t. the arm joints [3, n_arm] (arm tasks)."""
        return np.asarray(self._need_env().unwrapped.arm_jacobian(), np.float64)

    def _need_env(self) -> gym.Env:
        if self.env is None:
            raise UsageError(f"sim:{self.env_id}: robot is not connected")
        return self.env

    # -- Robot protocol
    def reset(self, seed: int | None = None) -> RobotState:
        env = self._need_env()
        obs, info = env.reset(seed=seed)
        self._estopped = False
        self._over = False
        self._fresh = False
        self._cmd = self._hold.copy()
        self._state = RobotState(_obs(obs), 0.0, False, False, self._info(info, True))
        return self._state

    def send_action(self, action: np.ndarray) -> None:
        self._cmd = np.asarray(action, np.float32).copy()
        self._fresh = True

    def hold(self) -> None:
        if self.env is not None:
            self._cmd = self._hold_vector(self._cmd)

    def estop(self) -> None:
        self._estopped = True
        self.hold()

    def observe(self) -> RobotState:
        if self._state is None:
            raise UsageError(f"sim:{self.env_id}: no state yet; reset first")
        return self._state

    def tick(self) -> RobotState:
        env = self._need_env()
        if self._state is None:
            raise UsageError(f"sim:{self.env_id}: tick before reset")
        if self._estopped or self._over or (self.clock == "lockstep" and not self._fresh):
            prev = self._state
            return RobotState(prev.obs, 0.0, prev.terminated, prev.truncated, dict(prev.info, advanced=False))
        self._fresh = False
        obs, reward, terminated, truncated, info = env.step(self._cmd)
        self.steps += 1
        self._over = bool(terminated or truncated)
        self._state = RobotState(_obs(obs), float(reward), bool(terminated), bool(truncated),
                                 self._info(info, True))
        return self._state


def _obs(obs: Any) -> Any:
    """A Dict observation as the env gave it (its leaves keep their dtypes: uint8 images); a flat one as float32."""
    return obs if isinstance(obs, Mapping) else np.asarray(obs, np.float32)


def _servable(space: gym.Space) -> bool:
    """A Box, or a (nested) Dict whose leaves are Boxes: what the wire carries (robots/transport.py)."""
    if isinstance(space, spaces.Dict):
        return bool(space.spaces) and all(_servable(s) for s in space.spaces.values())
    return isinstance(space, spaces.Box)


def _is_arm_task(env_id: str) -> bool:
    """One of our arm tasks (they take ``obs_mode``)."""
    from roborl.envs.registry import TASKS

    return env_id in TASKS


def make_sim_robot(arg: str, **options: Any) -> SimRobot:
    """Backend factory for ``sim:ENV_ID`` (see :data:`roborl.robots.BACKENDS`)."""
    return SimRobot(arg, **options)
