"""Demo collection: device -> fixed-rate loop -> env -> (operator keeps it) -> store.

The session is a small state machine driven by device events::

    idle --START--> running --(env end | STOP | max steps)--> review --KEEP/SUCCESS/FAILURE--> store, idle
                       |                                          \\--DISCARD--> dropped, idle (redo)
                       \\--SUCCESS/FAILURE/KEEP/DISCARD: end the episode with that decision at once

An episode is buffered in memory and written to the store only when the operator keeps
it, so a crash (or kill -9) never leaves an unkept episode behind, and a kept one is
durable once written. The target ``episodes`` counts the episodes already in the store's
partition, so re-running the same command after a crash resumes where it stopped.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from roborl.envs.step import env_step
from roborl.teleop.config import TeleopConfig
from roborl.teleop.device import DECISIONS, Device, Event, ZeroWatchdog, is_finite_command, to_env_action
from roborl.teleop.intervention import Transition
from roborl.teleop.rate import RateLoop, RateStats


@dataclass
class CollectSummary:
    """What a collection session did."""

    already: int = 0                 # episodes in the partition before this session
    kept: int = 0
    discarded: int = 0
    successes: int = 0               # kept episodes labelled success
    lengths: list[int] = field(default_factory=list)   # steps of each kept episode
    zero_warnings: int = 0
    quit: bool = False
    rate: RateStats | None = None
    step_timestamps: list[float] = field(default_factory=list)  # of the last kept episode

    @property
    def success_rate(self) -> float:
        return self.successes / self.kept if self.kept else 0.0

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else 0.0

    def lines(self) -> list[str]:
        out = [f"kept {self.kept} (store now has {self.already + self.kept}), discarded {self.discarded}, "
               f"success rate {self.success_rate:.0%}, mean length {self.mean_length:.1f} steps"]
        if self.rate is not None:
            out.append(f"control loop: {self.rate.summary()}")
        if self.zero_warnings:
            out.append(f"warning: the device reported only zeros {self.zero_warnings} time(s) while driving")
        return out



def build_teleop_env(env_id: str, seed: int, env_overrides: dict[str, Any] | None = None) -> Any:
    """The env stack for teleoperation: :func:`roborl.envs.config.build_env` with the safety layer
    but nothing that rescales or normalizes observations and no domain randomization, so the
    store gets the raw [-1, 1] end-effector action and raw observations. ``env_overrides``: the
    nested ``env`` section of ``env.*`` key=value overrides (win over these defaults)."""
    from roborl.config import _merge, build
    from roborl.envs.config import EnvConfig, build_env

    cfg = build(EnvConfig, _merge({"id": env_id, "normalize_obs": False, "dr": {"enabled": False}}, env_overrides or {}),
                "roborl teleop --env")
    return build_env(cfg, seed=seed)


class ReviewBuffer:
    """The sink of an episode under review: :func:`roborl.envs.step.env_step` appends each step here
    (the store's ``add_step`` signature) and :class:`DemoCollector` writes the list to the store,
    relabelled, only when the operator keeps the episode."""

    def __init__(self, obs0: Any) -> None:
        self.obs0 = obs0
        self.steps: list[Transition] = []
        self._obs = obs0

    def add_step(self, *, action: Any, executed_action: Any, reward: float, next_obs: Any, terminated: bool,
                 truncated: bool, is_success: bool = False, intervention: bool = False,
                 timestamp: float | None = None) -> None:
        self.steps.append(Transition(self._obs, np.asarray(action), np.asarray(executed_action, np.float32),
                                     float(reward), next_obs, bool(terminated), bool(truncated), bool(is_success),
                                     timestamp))
        self._obs = next_obs


class DemoCollector:
    """Runs a collection session.

    env: a gymnasium env whose action is an end-effector delta in [-1, 1] (``layout`` names it).
    store: a roborl.store.ReplayStore opened for appending (``start_episode``/``add_step``/``num_episodes``).
    status: called with a one-line status text (headless status line); None = silent.
    viewer: an object with ``sync()`` and ``is_running()`` (mujoco passive viewer) or None.
    rate_loop: injectable for tests; default ``RateLoop(cfg.hz)``.
    """

    def __init__(self, env: Any, device: Device, store: Any, cfg: TeleopConfig, *, layout: Sequence[str],
                 partition: str = "demo", seed: int = 0, status: Callable[[str], None] | None = None,
                 viewer: Any = None, rate_loop: RateLoop | None = None) -> None:
        self.env, self.device, self.store, self.cfg = env, device, store, cfg
        self.layout = tuple(layout)
        self.partition = partition
        self.seed = seed
        self.status = status
        self.viewer = viewer
        self.loop = rate_loop or RateLoop(cfg.hz)
        self.watchdog = ZeroWatchdog(cfg.zero_warn_s, getattr(device, "name", "device"))
        # Observable progress (tests and UIs poll these): "idle" | "running" | "review".
        self.state = "idle"
        self.buffer = ReviewBuffer(None)
        self.steps: list[Transition] = self.buffer.steps  # the episode under way / under review
        self.summary = CollectSummary()

    def _say(self, text: str) -> None:
        if self.status is not None:
            self.status(text)

    def run(self, episodes: int) -> CollectSummary:
        """Collect until the partition holds ``episodes`` episodes (or the operator quits).

        Events of one device report are applied in order, so a fast operator's
        "start, ..., success" within one control period is not lost.
        """
        s = self.summary = CollectSummary(already=int(self.store.num_episodes(self.partition)))
        attempt = s.already  # seeds continue after a resume instead of replaying the same scenes
        self.state = "idle"
        obs: Any = None
        self.buffer = ReviewBuffer(None)
        self.steps = self.buffer.steps
        if s.already >= episodes:
            self._say(f"store already has {s.already} >= {episodes} episodes in '{self.partition}'; nothing to do")
            s.rate = self.loop.stats
            return s
        if s.already:
            self._say(f"resuming: {s.already} of {episodes} episodes already in the store")

        def begin() -> None:
            nonlocal obs, attempt
            obs, _ = self.env.reset(seed=self.seed + attempt)
            attempt += 1
            self.buffer = ReviewBuffer(obs)
            self.steps = self.buffer.steps
            self.device.on_episode_start(obs)
            self.state = "running"
            self._say(f"episode {s.already + s.kept + 1}/{episodes}: driving")

        def end() -> None:
            ok = self.steps[-1].is_success if self.steps else False
            self.state = "review"
            self.device.on_episode_end(ok)
            self._say(f"episode ended after {len(self.steps)} steps (env success: {ok}); "
                      f"keep / success / failure / discard?")

        def decide(decision: Event) -> None:
            nonlocal obs
            if self.state == "running":
                self.device.on_episode_end(self.steps[-1].is_success if self.steps else False)
            self._finish(decision, self.buffer.obs0, self.steps, s)
            self.buffer = ReviewBuffer(None)
            self.state, obs, self.steps = "idle", None, self.buffer.steps
            self._say(f"kept {s.kept}, discarded {s.discarded}; start the next episode")

        try:
            while s.already + s.kept < episodes:
                t = self.loop.tick()
                cmd = self.device.read(obs if self.state == "running" else None)
                if self.watchdog.update(cmd.active, driving=self.state == "running") is not None:
                    s.zero_warnings = self.watchdog.warnings
                state_before = self.state
                for ev in cmd.events:
                    if ev == Event.QUIT:
                        s.quit = True
                    elif self.state == "idle" and ev == Event.START:
                        begin()
                    elif self.state == "running" and ev == Event.STOP:
                        end()
                    elif self.state in ("running", "review") and ev in DECISIONS:
                        decide(ev)
                    if s.quit or s.already + s.kept >= episodes:
                        break
                if s.quit:
                    break
                if self.state == "idle" and self.cfg.auto_start and s.already + s.kept < episodes:
                    begin()
                if self.state == "running" and state_before == "running" and is_finite_command(cmd):
                    # The report that started the episode was read before the reset: it is no motion.
                    obs, done = self._step(obs, cmd, t)
                    n = len(self.steps)
                    if done or (self.cfg.max_episode_steps and n >= self.cfg.max_episode_steps):
                        end()
                    elif n % max(int(self.cfg.hz), 1) == 0:
                        self._say(f"episode {s.already + s.kept + 1}/{episodes}: step {n}, "
                                  f"loop overruns {self.loop.overruns}")
                self._sync_viewer()
        except KeyboardInterrupt:
            s.quit = True
        s.rate = self.loop.stats
        return s

    def _step(self, obs: Any, cmd: Any, t: float) -> tuple[Any, bool]:
        step = env_step(self.env, obs, to_env_action(cmd, self.layout), sink=self.buffer, timestamp=t)
        return step.next_obs, step.done

    def _finish(self, decision: Event, obs0: Any, steps: list[Transition], s: CollectSummary) -> None:
        if decision == Event.DISCARD or not steps:
            s.discarded += 1
            return
        if decision == Event.KEEP:
            label = steps[-1].is_success
        else:
            label = decision == Event.SUCCESS
        # buffered: the store writes the whole episode as one WAL append when its last step
        # arrives, so a kill mid-write leaves either the whole kept episode or nothing.
        self.store.start_episode(obs0, partition=self.partition, buffered=True)
        n = len(steps)
        for i, st in enumerate(steps):
            last = i == n - 1
            # The operator's label is authoritative: a failure label clears the env's flags;
            # a success label marks the final step.
            ok = label if last else (st.is_success and label)
            self.store.add_step(action=st.action, executed_action=st.executed_action, reward=st.reward,
                                next_obs=st.next_obs, terminated=st.terminated,
                                # an operator-ended episode is a time-limit cut: it still bootstraps
                                truncated=st.truncated or (last and not st.terminated),
                                is_success=ok, intervention=False, timestamp=st.timestamp)
        s.kept += 1
        s.successes += int(label)
        s.lengths.append(n)
        s.step_timestamps = [st.timestamp for st in steps]

    def _sync_viewer(self) -> None:
        if self.viewer is not None:
            try:
                if self.viewer.is_running():
                    self.viewer.sync()
            except Exception:  # a closed window must not lose the session
                self.viewer = None


def text_status(stream: Any = None) -> Callable[[str], None]:
    """A status-line printer: rewrites one line on a TTY, prints lines otherwise."""
    out = stream or sys.stderr
    tty = out.isatty()

    def show(text: str) -> None:
        if tty:
            out.write("\r\x1b[2K" + text)
        else:
            out.write(text + "\n")
        out.flush()

    return show
