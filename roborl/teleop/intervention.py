"""Interventions during online training (HIL-SERL, Luo et al. 2024, "Precise and Dexterous
Robotic Manipulation via Human-in-the-Loop RL").

The off-policy runner hands the source to :func:`roborl.envs.step.env_step`, which polls it
every env step::

    source.reset(obs)                                  # at each episode start
    step = env_step(env, obs, policy_action, sink=store, source=source, recorder=recorder)
    #   active, op_action = source.poll(obs); the operator's action is executed when active;
    #   the store gets action=policy_action, executed_action, intervention=active
    ...at episode end: recorder.flush(store); metrics |= source.episode_stats()

:func:`run_episode` is one such episode. Intervention steps store the
operator's action as the executed action and ``intervention=True``; with
``copy_to_demo`` each contiguous intervention segment is also written to the demo
partition as its own episode (HIL-SERL adds intervention data to both buffers), ending
``truncated`` (it still bootstraps) unless the env terminated there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from roborl.envs.step import EpisodeStats, env_step
from roborl.teleop.config import InterventionConfig, TeleopConfig
from roborl.teleop.device import Device, Event, ZeroWatchdog, to_env_action


@runtime_checkable
class InterventionSource(Protocol):
    """Who may take over from the policy."""

    def reset(self, obs: Any) -> None:
        """A new episode starts (obs: the reset observation)."""
        ...

    def poll(self, obs: Any) -> tuple[bool, np.ndarray | None]:
        """(active?, the operator's action [A] float32 in the env's [-1, 1] action space, or None)."""
        ...

    def episode_stats(self) -> dict[str, float]:
        """Per-episode intervention statistics since ``reset``: intervention_rate (share of
        steps), intervention_steps, interventions (takeovers)."""
        ...

    def close(self) -> None:
        ...


class _Counts:
    def __init__(self) -> None:
        self.steps = 0
        self.active_steps = 0
        self.takeovers = 0
        self._was_active = False

    def count(self, active: bool) -> None:
        self.steps += 1
        self.active_steps += int(active)
        self.takeovers += int(active and not self._was_active)
        self._was_active = active

    def stats(self) -> dict[str, float]:
        return {"intervention_rate": self.active_steps / self.steps if self.steps else 0.0,
                "intervention_steps": float(self.active_steps), "interventions": float(self.takeovers)}


class DeviceIntervention:
    """A teleop device as the intervention source: the intervene event toggles the takeover.

    layout: names of the env's action components (roborl.teleop.device.action_layout).
    """

    def __init__(self, device: Device, layout: Sequence[str], *, zero_warn_s: float = 3.0) -> None:
        self.device = device
        self.layout = tuple(layout)
        self.active = False
        self.watchdog = ZeroWatchdog(zero_warn_s, getattr(device, "name", "device"))
        self._counts = _Counts()
        self._opened = False
        self._label: bool | None = None

    def reset(self, obs: Any) -> None:
        if not self._opened:
            self.device.open()
            self._opened = True
        self.device.on_episode_start(obs)
        self._counts = _Counts()

    def poll(self, obs: Any) -> tuple[bool, np.ndarray | None]:
        cmd = self.device.read(obs)
        for ev in cmd.events:
            if ev == Event.INTERVENE_ON:
                self.active = True
            elif ev == Event.INTERVENE_OFF:
                self.active = False
            elif ev in (Event.SUCCESS, Event.FAILURE):
                self._label = ev == Event.SUCCESS  # the operator's verdict ends the episode (pop_label)
        self.watchdog.update(cmd.active, driving=self.active)
        self._counts.count(self.active)
        return (True, to_env_action(cmd, self.layout)) if self.active else (False, None)

    def pop_label(self) -> bool | None:
        """The SUCCESS (True) / FAILURE (False) the operator sent since the last call, else None."""
        label, self._label = self._label, None
        return label

    def episode_stats(self) -> dict[str, float]:
        return self._counts.stats()

    def close(self) -> None:
        if self._opened:
            self.device.close()
            self._opened = False


class ScriptedIntervention:
    """The scripted expert takes over on a schedule, at random, or when ``trigger(obs)`` says
    the policy is doing badly. For tests and for studying intervention mixes without a human.

    expert: ``(obs) -> action`` (with optional ``reset()``), e.g. ``roborl.envs.expert(env)``.
    every: take over in every ``every``-th episode (0 = never) from ``start_step`` for ``duration`` steps.
    probability: per-step chance of starting a ``duration``-step takeover.
    trigger: ``(obs) -> bool``; True starts a ``duration``-step takeover.
    """

    def __init__(self, expert: Callable[[Any], np.ndarray], *, every: int = 1, start_step: int = 10,
                 duration: int = 20, probability: float = 0.0, trigger: Callable[[Any], bool] | None = None,
                 seed: int = 0) -> None:
        self.expert = expert
        self.every, self.start_step, self.duration = every, start_step, duration
        self.probability = probability
        self.trigger = trigger
        self.rng = np.random.default_rng(seed)
        self.episode = -1
        self.t = 0
        self._until = -1
        self._counts = _Counts()

    def reset(self, obs: Any) -> None:
        self.episode += 1
        self.t = 0
        self._until = -1
        self._counts = _Counts()
        if hasattr(self.expert, "reset"):
            self.expert.reset()  # type: ignore[attr-defined]

    def poll(self, obs: Any) -> tuple[bool, np.ndarray | None]:
        if self.t >= self._until:
            scheduled = self.every > 0 and self.episode % self.every == 0 and self.t == self.start_step
            random = self.probability > 0 and self.rng.random() < self.probability
            triggered = self.trigger is not None and bool(self.trigger(obs))
            if scheduled or random or triggered:
                self._until = self.t + self.duration
        active = self.t < self._until
        self.t += 1
        self._counts.count(active)
        if not active:
            return False, None
        a = np.clip(np.asarray(self.expert(obs), dtype=np.float32), -1.0, 1.0)
        return True, a

    def episode_stats(self) -> dict[str, float]:
        return self._counts.stats()

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- recording

@dataclass
class Transition:
    """One recorded step (teleop collection and intervention segments share it)."""

    obs: Any
    action: np.ndarray
    executed_action: np.ndarray
    reward: float
    next_obs: Any
    terminated: bool
    truncated: bool
    is_success: bool
    timestamp: float | None


@dataclass
class InterventionRecorder:
    """Collects the contiguous intervention segments of one episode; ``flush`` writes each
    as an episode of ``partition`` (after the online episode has been closed)."""

    partition: str = "demo"
    segments: list[list[Transition]] = field(default_factory=list)
    _open: bool = False

    def start(self) -> None:
        self.segments, self._open = [], False

    def step(self, *, obs: Any, action: np.ndarray, executed_action: np.ndarray, reward: float, next_obs: Any,
             terminated: bool, truncated: bool, intervention: bool, is_success: bool = False,
             timestamp: float | None = None) -> None:
        if not intervention:
            self._open = False
            return
        if not self._open:
            self.segments.append([])
            self._open = True
        self.segments[-1].append(Transition(obs, np.asarray(action, np.float32), np.asarray(executed_action, np.float32),
                                            float(reward), next_obs, bool(terminated), bool(truncated),
                                            bool(is_success), timestamp))

    def flush(self, store: Any) -> int:
        """Write the segments to ``store`` (no episode may be open there). Returns how many."""
        for seg in self.segments:
            store.start_episode(seg[0].obs, partition=self.partition)
            for i, r in enumerate(seg):
                last = i == len(seg) - 1
                extra = {} if r.timestamp is None else {"timestamp": r.timestamp}
                store.add_step(action=r.action, executed_action=r.executed_action, reward=r.reward, next_obs=r.next_obs,
                               terminated=r.terminated, truncated=r.truncated or (last and not r.terminated),
                               is_success=r.is_success, intervention=True, **extra)
        n = len(self.segments)
        self.start()
        return n


def run_episode(env: Any, act: Callable[[Any], np.ndarray], source: InterventionSource | None, store: Any = None, *,
                partition: str = "online", copy_to_demo: bool = True, seed: int | None = None) -> dict[str, float]:
    """One episode where ``source`` may take over from ``act``; every step goes to ``store``
    through :func:`roborl.envs.step.env_step`.

    act: ``(obs) -> action`` [A] in [-1, 1] (the policy). Returns episode metrics:
    return, length, success (of the last step), intervention_rate, intervention_steps,
    interventions, demo_segments.
    """
    obs, _ = env.reset(seed=seed)
    if source is not None:
        source.reset(obs)
    recorder = InterventionRecorder()
    if store is not None:
        store.start_episode(obs, partition=partition)
    stats = EpisodeStats()
    step = None
    while step is None or not step.done:
        step = env_step(env, obs, np.asarray(act(obs), dtype=np.float32), sink=store, source=source,
                        recorder=recorder, stats=stats)
        obs = step.next_obs
    segments = recorder.flush(store) if (store is not None and copy_to_demo) else len(recorder.segments)
    stats_i = source.episode_stats() if source is not None else {"intervention_rate": 0.0, "intervention_steps": 0.0,
                                                                 "interventions": 0.0}
    return {"return": stats.ret, "length": float(stats.length), "success": float(step.success), **stats_i,
            "demo_segments": float(segments)}


def build_intervention(cfg: InterventionConfig, env: Any, teleop: TeleopConfig | None = None,
                       seed: int = 0) -> InterventionSource | None:
    """The source named by ``cfg.source`` (None for "none"). ``teleop`` configures the device."""
    if cfg.source == "none":
        return None
    if cfg.source == "scripted":
        from roborl.teleop.scripted import make_expert

        return ScriptedIntervention(make_expert(env, noise=cfg.noise, seed=seed), every=cfg.every,
                                    start_step=cfg.start_step, duration=cfg.duration, probability=cfg.probability,
                                    seed=seed)
    from roborl.teleop.device import action_layout
    from roborl.teleop.registry import make_device

    tcfg = teleop or TeleopConfig()
    layout = action_layout(env, tcfg.action_layout)
    return DeviceIntervention(make_device(tcfg, env, layout), layout, zero_warn_s=tcfg.zero_warn_s)
