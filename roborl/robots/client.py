"""``robot://HOST:PORT``: a gymnasium env over the robot server.

A policy trained in simulation runs on it unchanged (``roborl eval CKPT --env
robot://127.0.0.1:5555``): the spaces come from the server's ``hello``; ``reset`` homes the
robot and claims control; ``step(action)`` returns the state after one control period.
Every call has a deadline (``timeout_s`` for steps, ``reset_timeout_s`` for homing);
a dead or unreachable server raises :class:`~roborl.robots.transport.PeerUnavailable`
(a ``ConnectionError`` and a ``UsageError``: one line, exit code 2 on the CLI), never a
hang. Refusals by the server (e-stop, malformed, unauthorized) raise ``RemoteError``.

URL options: ``robot://HOST:PORT?token=T&timeout=2.0&reset_timeout=30``; the token can
also come from ``$ROBORL_ROBOT_TOKEN`` (keeps it out of configs and the process list).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roborl.errors import UsageError
from roborl.robots.transport import (Channel, Message, MessageError, RemoteError, obs_from_arrays, parse_hostport,
                                     resolve_token, space_from_json)

SCHEME = "robot://"


def parse_robot_url(url: str) -> tuple[str, int, dict[str, str]]:
    """``robot://HOST:PORT?k=v`` -> (host, port, options)."""
    if not url.startswith(SCHEME):
        raise UsageError(f"env.id {url!r}: a robot env id looks like robot://HOST:PORT")
    parts = urlsplit(url)
    host, port = parse_hostport(parts.netloc, f"env.id {url!r}:")
    opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(opts) - {"token", "timeout", "reset_timeout"}
    if unknown:
        raise UsageError(f"env.id {url!r}: unknown option(s) {sorted(unknown)} (known: token, timeout, reset_timeout)")
    return host, port, opts


def _space(d: Any, what: str) -> gym.Space:
    """A space from the server's ``hello`` (a Box, or a nested Dict of Boxes), validated."""
    try:
        return space_from_json(d, what)
    except MessageError as e:
        raise UsageError(f"robot server sent a malformed {e}") from None


class RobotEnv(gym.Env):
    """Gymnasium env over ``roborl robot serve``. Actions [act_dim]. Observations as the server's
    robot gives them: [obs_dim] float32, or a (nested) Dict such as
    ``{"proprio": f32[P], "pixels": {"front": u8[H, W, 3], "wrist": u8[H, W, 3]}}``; each reply is
    checked against the space from ``hello`` (every leaf present, exact shape and dtype).

    ``info`` of ``step`` carries the server's view: ``tick``, ``watchdog`` (the robot was held
    since the last step), ``held_ticks``, ``safety_modified``, ``applied``, plus the backend's
    own info (``ee_pos``, ``is_success``, ...).
    """

    metadata = {"render_modes": []}

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float | None = None,
                 reset_timeout_s: float | None = None, connect_timeout_s: float = 5.0) -> None:
        host, port, opts = parse_robot_url(url)
        self.url = url
        self.timeout_s = float(timeout_s if timeout_s is not None else opts.get("timeout", 2.0))
        self.reset_timeout_s = float(reset_timeout_s if reset_timeout_s is not None else opts.get("reset_timeout", 30.0))
        self.channel = Channel(host, port, token=resolve_token(token or opts.get("token")),
                               timeout_s=self.timeout_s, attempt_timeout_s=min(0.5, self.timeout_s / 2),
                               name="robot server")
        try:
            hello = self.channel.call("hello", timeout_s=connect_timeout_s).header
        except BaseException:
            self.channel.close()
            raise
        self.server_info = hello
        try:
            self.observation_space = _space(hello.get("observation_space"), "observation_space")
            self.action_space = _space(hello.get("action_space"), "action_space")
            if not isinstance(self.action_space, spaces.Box):
                raise UsageError(f"robot server {url} sent a non-Box action_space")
        except BaseException:
            self.channel.close()
            raise
        self.control_hz = float(hello.get("control_hz") or 0.0)
        self.action_mode = hello.get("action_mode")
        self.max_episode_steps = hello.get("max_episode_steps")
        self._needs_reset = True

    # -- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        fields = {"seed": int(seed) if seed is not None else None}
        msg = self.channel.call("reset", fields, timeout_s=self.reset_timeout_s)
        self._needs_reset = False
        obs, _, _, _, info = self._unpack(msg)
        return obs, info

    def step(self, action: np.ndarray):
        if self._needs_reset:
            raise UsageError(f"{self.url}: step() before reset()")
        a = np.asarray(action, dtype=np.float32).reshape(-1) if np.ndim(action) <= 1 else np.asarray(action, np.float32)
        if a.shape != self.action_space.shape:
            raise UsageError(f"{self.url}: action shape {a.shape} does not match the robot's {self.action_space.shape}")
        msg = self.channel.call("step", arrays={"action": a})
        obs, reward, terminated, truncated, info = self._unpack(msg)
        if terminated or truncated:
            self._needs_reset = True
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self.channel.close()

    # -- extras
    def estop(self) -> None:
        """Latch the robot's e-stop (cleared by the next reset)."""
        self.channel.call("estop")
        self._needs_reset = True

    def stats(self) -> dict[str, Any]:
        """The server's latency/jitter statistics."""
        return self.channel.call("stats").header["stats"]

    def observe(self) -> tuple[Any, dict[str, Any]]:
        """The robot's latest state without acting (any client may call this)."""
        msg = self.channel.call("observe")
        obs, _, _, _, info = self._unpack(msg)
        info.update(holding=msg.header.get("holding"), estopped=msg.header.get("estopped"))
        return obs, info

    def _unpack(self, msg: Message):
        h = msg.header
        try:
            obs = obs_from_arrays(msg.arrays, self.observation_space)
        except MessageError as e:
            raise RemoteError(f"robot server {self.url} sent a bad {h.get('type')!r} reply: {e}") from None
        info = dict(h.get("info") or {})
        for k in ("tick", "watchdog", "held_ticks", "safety_modified", "applied"):
            if k in h:
                info[k] = h[k]
        return obs, float(h.get("reward", 0.0)), bool(h.get("terminated")), bool(h.get("truncated")), info


def make_robot_env(url: str, **kwargs: Any) -> RobotEnv:
    """Factory for the ``robot://`` scheme of :data:`roborl.envs.make.SCHEMES`.

    kwargs: ``token``, ``timeout_s``, ``reset_timeout_s``, ``connect_timeout_s``.
    """
    return RobotEnv(url, **kwargs)


__all__ = ["RobotEnv", "make_robot_env", "parse_robot_url"]
