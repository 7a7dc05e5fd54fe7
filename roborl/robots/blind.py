"""The blind twin and the server's own episode log.

``roborl robot serve --backend sim:roborl/Push-v0 --blind`` serves what a real arm gives: every
reply carries reward 0, ``terminated`` False (an episode the task ended shows as ``truncated``,
which says "over" without saying why), and only the allow-listed :data:`BLIND_INFO_KEYS` of
``info`` - no success flag, no goal, no object pose. A policy or evaluation script that runs
against it is forced to do without privileged feedback, exactly as on hardware.

The server still sees the truth: with ``--log-dir DIR`` it appends one JSON line per episode to
``DIR/episodes.jsonl`` (:class:`EpisodeLog`: seed, steps, return, true final success, whether
success was reached at any step, how the episode ended) and ``roborl robot stats DIR`` reports
true success per episode and overall (:func:`summarize`).

Observations: a robot (or the sim twin, from its env's ``privileged_obs_keys`` /
``privileged_info_keys``, see :func:`roborl.envs.spaces.privileged_keys`) declares which
observation and info keys carry ground truth. The blind server drops them from its observation
space and from every observation and info (:func:`roborl.envs.spaces.strip_privileged`), so with
a Dict observation (``{"proprio": [P], "pixels": {"front": HxWx3, ...}}``, the sim twin's
``obs_mode=proprio+pixels``) it serves exactly a real arm's proprioception and cameras. A flat
observation cannot be filtered by key: a backend that declares privileged keys on one is refused
(:func:`check_blind_observation`), rather than served silently.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from roborl.envs.spaces import WRAPPER_PRIVILEGED_INFO_KEYS, strip_privileged, strip_privileged_space
from roborl.errors import UsageError
from roborl.robots import Robot, RobotState

#: info keys a blind server passes through: what the server itself adds and what a real arm reports.
BLIND_INFO_KEYS = frozenset({"executed_action", "safety", "ee_pos", "advanced"})
LOG_NAME = "episodes.jsonl"


def blind_state(state: RobotState, obs_keys: tuple[str, ...] = (), info_keys: tuple[str, ...] = ()) -> RobotState:
    """``state`` as a real arm without a success detector would report it (see the module docstring):
    the privileged observation entries ``obs_keys`` dropped (Dict observations), reward 0, no
    ``terminated``, and of ``info`` only the allow-listed :data:`BLIND_INFO_KEYS` (``info_keys`` are
    dropped first, so a privileged key can never be allow-listed by mistake)."""
    info = state.info if isinstance(state.info, dict) else {}
    obs, info = strip_privileged(state.obs, info, obs_keys, info_keys)
    return RobotState(obs, 0.0, False, bool(state.terminated or state.truncated),
                      {k: v for k, v in info.items() if k in BLIND_INFO_KEYS})


def privileged_obs_keys(robot: Robot) -> tuple[str, ...]:
    """The observation keys ``robot`` declares privileged (``privileged_obs_keys``; empty if none)."""
    keys = getattr(robot, "privileged_obs_keys", ()) or ()
    return tuple(str(k) for k in keys)


def privileged_info_keys(robot: Robot) -> tuple[str, ...]:
    """The info keys ``robot`` declares privileged, plus those our wrappers add (``dr_params``)."""
    keys = tuple(str(k) for k in (getattr(robot, "privileged_info_keys", ()) or ()))
    return tuple(dict.fromkeys(keys + WRAPPER_PRIVILEGED_INFO_KEYS))


def blind_observation_space(space: Any, obs_keys: tuple[str, ...]) -> Any:
    """The observation space a blind server serves: ``space`` without the privileged entries."""
    return strip_privileged_space(space, obs_keys)


def check_blind_observation(robot: Robot, backend: str) -> None:
    """Refuse (one line) a blind server whose robot declares privileged keys it cannot filter: a flat
    observation, or a Dict whose every entry is privileged."""
    from gymnasium import spaces

    keys = privileged_obs_keys(robot)
    space = robot.observation_space
    if keys and not isinstance(space, spaces.Dict):
        raise UsageError(f"--blind: --backend {backend!r} declares privileged observation keys {list(keys)}, but its "
                         f"observation is a flat vector that cannot be filtered by key (needs dict observations)")
    if isinstance(space, spaces.Dict) and not strip_privileged_space(space, keys).spaces:
        raise UsageError(f"--blind: --backend {backend!r}: every observation entry is privileged {list(keys)}; "
                         f"nothing a real arm measures is left to serve")


class EpisodeLog:
    """The server's true per-episode record, one JSON line per finished episode in ``DIR/episodes.jsonl``.

    ``start(seed, session)`` at each reset, ``tick(state)`` with the backend's unfiltered state
    each control period, ``end(how)`` when the episode is over (``terminated``, ``truncated``,
    ``reset`` by a new one, ``stop`` of the server). Each line is flushed as it is written, so a
    killed server loses at most the running episode.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.dir = Path(log_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._f = open(self.dir / LOG_NAME, "a", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--log-dir {str(log_dir)!r}: cannot write there ({e.strerror})") from None
        self.index = self._count_existing()
        self.cur: dict[str, Any] | None = None

    def _count_existing(self) -> int:
        try:
            with open(self.dir / LOG_NAME, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return 0

    def start(self, seed: int | None, session: str) -> None:
        self.end("reset")
        self.cur = {"episode": self.index, "seed": seed, "session": session, "steps": 0, "return": 0.0,
                    "success": False, "ever_success": False, "t_start": round(time.time(), 3)}

    def tick(self, state: RobotState) -> None:
        c = self.cur
        if c is None:
            return
        info = state.info if isinstance(state.info, dict) else {}
        if info.get("advanced", True):
            c["steps"] += 1
            r = float(state.reward)
            c["return"] += r if math.isfinite(r) else 0.0
            ok = bool(info.get("is_success", False))
            c["success"] = ok
            c["ever_success"] = c["ever_success"] or ok
        if state.terminated or state.truncated:
            self.end("terminated" if state.terminated else "truncated")

    def end(self, how: str) -> None:
        c, self.cur = self.cur, None
        if c is None:
            return
        c["end"] = how
        c["return"] = round(c["return"], 6)
        c["duration_s"] = round(time.time() - c["t_start"], 3)
        self._f.write(json.dumps(c) + "\n")
        self._f.flush()
        self.index += 1

    def close(self) -> None:
        self.end("stop")
        self._f.close()


def read_log(log_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The episodes of ``DIR/episodes.jsonl`` (a torn last line, from a killed server, is skipped)."""
    path = Path(log_dir) / LOG_NAME
    if not Path(log_dir).is_dir():
        raise UsageError(f"{str(log_dir)!r} is neither robot://HOST:PORT nor a --log-dir directory")
    if not path.is_file():
        raise UsageError(f"{str(log_dir)!r}: no {LOG_NAME} (was the server started with --log-dir here?)")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "episode" in rec:
                out.append(rec)
    return out


def summarize(log_dir: str | os.PathLike) -> dict[str, Any]:
    """True success per episode and overall, from a server's episode log."""
    eps = read_log(log_dir)
    n = len(eps)
    succ = sum(bool(e.get("success")) for e in eps)
    ever = sum(bool(e.get("ever_success")) for e in eps)
    return {"log_dir": str(log_dir), "episodes": n, "successes": succ,
            "success_rate": round(succ / n, 4) if n else None,
            "ever_success_rate": round(ever / n, 4) if n else None,
            "per_episode": [{k: e.get(k) for k in ("episode", "seed", "steps", "return", "success", "ever_success",
                                                   "end")} for e in eps]}


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"{'episode':>7} {'seed':>6} {'steps':>6} {'return':>10} {'success':>7} {'ever':>5}  end"]
    for e in s["per_episode"]:
        lines.append(f"{e['episode']:>7} {str(e['seed']):>6} {e['steps']:>6} {e['return']:>10.3f} "
                     f"{str(bool(e['success'])):>7} {str(bool(e['ever_success'])):>5}  {e['end']}")
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.1f} %"
    lines.append(f"overall: {s['successes']}/{s['episodes']} episodes successful ({rate}) - {s['log_dir']}")
    return "\n".join(lines)


__all__ = ["BLIND_INFO_KEYS", "EpisodeLog", "blind_observation_space", "blind_state", "check_blind_observation",
           "format_summary", "privileged_info_keys", "privileged_obs_keys", "read_log", "summarize"]
