"""Scripted device: replays the task's scripted expert, for tests and headless collection.

It plays the operator's whole part: it starts each episode, drives with the expert
(``roborl.envs.expert``), and answers the review with the next entry of
``ScriptedConfig.decisions`` (keep / success / failure / discard, cycled).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from roborl.errors import UsageError
from roborl.teleop.config import ScriptedConfig
from roborl.teleop.device import Command, DeviceBase, Event, from_env_action


def make_expert(env: Any, noise: float = 0.0, seed: int = 0) -> Any:
    """The task's scripted expert: ``exp.reset(); a = exp(obs)`` with ``a`` in the env's action space."""
    from roborl.envs.expert import expert

    return expert(env, noise=noise, seed=seed)


class ScriptedDevice(DeviceBase):
    """The scripted expert as a device.

    ``policy``: optional ``(obs) -> env action`` used instead of the task's expert; ``reset``
    is called on it at each episode start when it has that method.
    """

    name = "scripted"

    def __init__(self, env: Any, layout: Sequence[str], cfg: ScriptedConfig | None = None,
                 policy: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ScriptedConfig()
        self.env = env
        self.layout = tuple(layout)
        self._policy = policy
        self._state = "idle"      # idle -> running -> review -> idle
        self._episodes = 0

    def open(self) -> None:
        if self._policy is None:
            self._policy = make_expert(self.env, noise=self.cfg.noise, seed=self.cfg.seed)

    def on_episode_start(self, obs: np.ndarray) -> None:
        if hasattr(self._policy, "reset"):
            self._policy.reset()  # type: ignore[union-attr]
        self._state = "running"

    def on_episode_end(self, success: bool) -> None:
        self._state = "review"

    def read(self, obs: np.ndarray | None = None) -> Command:
        if self._state == "idle":
            return Command(motion=np.zeros(6, np.float32), events=(Event.START,), active=True)
        if self._state == "review":
            decision = self.cfg.decisions[self._episodes % len(self.cfg.decisions)]
            self._episodes += 1
            self._state = "idle"
            return Command(motion=np.zeros(6, np.float32), events=(Event(decision),), active=True)
        if obs is None or self._policy is None:
            raise UsageError("device 'scripted': read() needs the observation (and open() first)")
        cmd = from_env_action(np.asarray(self._policy(obs)), self.layout)
        return Command(motion=cmd.motion, grip=cmd.grip, events=(), active=True)
