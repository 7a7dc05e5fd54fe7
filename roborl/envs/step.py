"""The one env step every data path takes: training, remote actors, interventions, teleop, collection.

:func:`env_step` does, in this order::

    active, op_action = source.poll(obs)          # an operator may take over (HIL-SERL); optional
    command = op_action if active else action     # the policy's proposal otherwise
    next_obs, reward, terminated, truncated, info = env.step(command)
    executed = info["executed_action"]            # what the robot really did (safety layer), else command
    sink.add_step(action=action, executed_action=executed, ..., is_success=step_success(info),
                  intervention=active)            # the store (or a caller's review buffer)
    recorder.step(...)                            # intervention segments, copied to demos later
    stats.add(step)                               # episode return / length / success / safety clips

It lives in the bottom layer (it imports only :mod:`roborl.envs.success`) so that runners,
teleop and robots all call it without importing each other. ``sink``, ``source`` and
``recorder`` are duck-typed: a :class:`roborl.store.ReplayStore` (or anything with its
``add_step``), a :class:`roborl.teleop.intervention.InterventionSource`, a
:class:`roborl.teleop.intervention.InterventionRecorder`. Episode starts (``env.reset``,
``sink.start_episode``) stay with the caller: each has its own seeding and resume rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from roborl.envs.success import step_success

__all__ = ["Step", "EpisodeStats", "env_step", "count_safety_clips"]


@dataclass(slots=True)
class Step:
    """One transition as it was stored. ``action`` is the policy's proposal [A]; ``executed_action``
    [A] float32 is what the env executed (the operator's action during a takeover, after safety)."""

    obs: Any
    action: np.ndarray
    executed_action: np.ndarray
    reward: float
    next_obs: Any
    terminated: bool
    truncated: bool
    success: bool
    intervention: bool
    info: dict[str, Any]

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def count_safety_clips(info: dict[str, Any]) -> int:
    """Safety-layer interventions in one step's ``info["safety"]`` (a dict of per-reason counts)."""
    s = info.get("safety")
    if isinstance(s, dict):
        return int(sum(int(v) for v in s.values() if isinstance(v, (int, np.integer, bool, np.bool_))))
    return 0


@dataclass(slots=True)
class EpisodeStats:
    """Running totals of the current episode; ``reset()`` at each episode start."""

    ret: float = 0.0
    length: int = 0
    success: bool = False        # any step of the episode succeeded
    safety_clips: int = 0

    def add(self, step: Step) -> None:
        self.ret += step.reward
        self.length += 1
        self.success = self.success or step.success
        self.safety_clips += count_safety_clips(step.info)

    def reset(self) -> None:
        self.ret, self.length, self.success, self.safety_clips = 0.0, 0, False, 0


def env_step(env: Any, obs: Any, action: Any, *, sink: Any = None, source: Any = None, recorder: Any = None,
             stats: EpisodeStats | None = None, timestamp: float | None = None,
             success_key: str | None = None, info_fields: tuple[str, ...] = (),
             labeler: Any = None, log_prob: float | None = None) -> Step:
    """Step ``env`` once from ``obs`` with the policy's ``action`` [A] (or the operator's, when
    ``source`` takes over) and record the transition.

    sink: receives ``add_step(...)`` (a ReplayStore with an open episode, or a buffer with the same
    signature); None stores nothing. source: ``poll(obs) -> (active, op_action [A] | None)``.
    recorder: ``step(...)`` of every transition (keeps the takeover segments). stats: updated in
    place. timestamp: stored with the step (default: the store's clock). success_key: the env's
    success key in ``info`` (default: the known keys, :func:`roborl.envs.success.step_success`).
    info_fields: ``info`` keys stored as the sink's extra fields (e.g. the reward classifier's
    ``roborl.reward.wrapper.STORE_FIELDS``); a key missing from ``info`` keeps the field's default.
    labeler: ``label(success) -> bool`` of the env's reward classifier
    (:class:`roborl.reward.wrapper.ClassifierReward`), told the operator's SUCCESS / FAILURE before the
    step (it makes the step terminal with reward 1 / 0 and records ``operator_label``).
    log_prob: the behaviour policy's log mu(action|obs), stored when the executed action is the policy's
    (no takeover, no safety clip); else the store keeps NaN (unknown behaviour density, for Retrace).

    Operator labels (``source.pop_label()`` -> True / False / None, read right after the poll) end the
    episode at this step with that label: through ``labeler`` when there is one; otherwise success is a
    terminal step with ``is_success`` set and failure a truncation (the operator stopped it: the value
    of its last state is bootstrapped, nothing claims it was terminal).
    """
    active, op_action = source.poll(obs) if source is not None else (False, None)
    active = bool(active)
    pop = getattr(source, "pop_label", None)
    label = pop() if callable(pop) else None
    if label is not None and labeler is not None:
        labeler(bool(label))
    command = op_action if active and op_action is not None else action
    next_obs, reward, terminated, truncated, info = env.step(command)
    success = step_success(info, success_key)
    if label is not None and labeler is None:
        info = dict(info)
        info["operator_label"] = int(label)
        success = bool(label)
        terminated, truncated = (True, bool(truncated)) if label else (bool(terminated), True)
    elif label is not None:
        success = bool(label)
    executed = np.asarray(info.get("executed_action", command), dtype=np.float32)
    step = Step(obs, action, executed, float(reward), next_obs, bool(terminated), bool(truncated),
                success, active, info)
    if sink is not None:
        extra = {} if timestamp is None else {"timestamp": timestamp}
        extra.update({k: info[k] for k in info_fields if k in info})
        if log_prob is not None and not active and np.allclose(executed, np.asarray(action, dtype=np.float32)):
            extra["log_prob"] = float(log_prob)
        sink.add_step(action=action, executed_action=executed, reward=step.reward, next_obs=next_obs,
                      terminated=step.terminated, truncated=step.truncated, is_success=step.success,
                      intervention=active, **extra)
    if recorder is not None:
        recorder.step(obs=obs, action=action, executed_action=executed, reward=step.reward, next_obs=next_obs,
                      terminated=step.terminated, truncated=step.truncated, intervention=active,
                      is_success=step.success, timestamp=timestamp)
    if stats is not None:
        stats.add(step)
    return step
