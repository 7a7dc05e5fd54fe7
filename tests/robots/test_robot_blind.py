"""The blind twin: its messages carry no reward, success flag or privileged info; the server's own
episode log and `roborl robot stats LOGDIR` still report the true success."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import roborl
from roborl.errors import UsageError
from roborl.robots.blind import BLIND_INFO_KEYS, check_blind_observation, summarize
from roborl.robots.launch import ServerProcess
from roborl.robots.transport import Channel
from tests.robots import hwlike_arm as hw

TASK = "roborl/Reach-v0"


def _keys(obj: Any) -> set[str]:
    """Every dict key anywhere inside ``obj``."""
    if isinstance(obj, dict):
        return set(obj) | set().union(*(_keys(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_keys(v) for v in obj)) if obj else set()
    return set()


def _policy(obs: np.ndarray, expert: bool) -> np.ndarray:
    """Reach: obs[10:13] is goal - ee; the expert moves there, the other one does nothing."""
    a = np.zeros(4, np.float32)
    if expert:
        a[:3] = np.clip(obs[10:13] / 0.03, -1, 1)
    return a


def test_blind_twin_sends_no_reward_success_or_privileged_info(tmp_path: Path):
    log = tmp_path / "log"
    plan = [(0, True), (1, False), (2, True)]  # (seed, expert?)
    headers: list[dict] = []
    with ServerProcess(f"sim:{TASK}", hz=200, sim_clock="lockstep", extra=["--blind", "--log-dir", str(log)]) as srv:
        with Channel("127.0.0.1", srv.port, timeout_s=5.0) as ch:
            headers.append(ch.call("hello").header)
            assert headers[0]["blind"] is True
            for seed, expert in plan:
                m = ch.call("reset", {"seed": seed}, timeout_s=30.0)
                headers.append(m.header)
                obs = np.array(m.arrays["obs"])
                for _ in range(25):
                    m = ch.call("step", arrays={"action": _policy(obs, expert)})
                    headers.append(m.header)
                    obs = np.array(m.arrays["obs"])
                headers.append(ch.call("observe").header)
    assert len(headers) == 1 + len(plan) * 27  # hello + (reset, 25 steps, observe) per episode
    for h in headers[1:]:
        assert h["reward"] == 0.0 and h["terminated"] is False
        assert set(h["info"]) <= BLIND_INFO_KEYS, h["info"]
        assert not _keys(h["info"]) & {"is_success", "success", "goal", "object_pos", "safety_episode"}
        assert "is_success" not in h and "success" not in h
    # The truth, as the server logged it, matches the task run directly with the same actions.
    direct = []
    env = roborl.make_env(TASK)
    for seed, expert in plan:
        obs, _ = env.reset(seed=seed)
        for _ in range(25):
            obs, _, _, _, info = env.step(_policy(obs, expert))
        direct.append(bool(info["is_success"]))
    env.close()
    assert direct == [True, False, True]  # the check below can tell success from failure
    s = summarize(log)
    assert s["episodes"] == len(plan) and [e["success"] for e in s["per_episode"]] == direct
    assert [e["seed"] for e in s["per_episode"]] == [0, 1, 2] and s["per_episode"][0]["steps"] == 25
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "robot", "stats", str(log), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["success_rate"] == round(2 / 3, 4)
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "robot", "stats", str(log)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "overall: 2/3 episodes successful" in r.stdout
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "robot", "stats", str(tmp_path / "nothing")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_a_normal_twin_still_sends_the_task_feedback():
    """The control for the test above: without --blind the same messages do carry success and reward."""
    with ServerProcess(f"sim:{TASK}", hz=200, sim_clock="lockstep") as srv:
        with Channel("127.0.0.1", srv.port, timeout_s=5.0) as ch:
            ch.call("reset", {"seed": 0}, timeout_s=30.0)
            h = ch.call("step", arrays={"action": np.zeros(4, np.float32)}).header
    assert "is_success" in h["info"] and h["reward"] != 0.0


def test_blind_refuses_privileged_observation_keys_it_cannot_filter():
    arm = hw.make()
    check_blind_observation(arm, "hw")  # declares none: fine
    arm.privileged_obs_keys = ("object_pos",)
    with pytest.raises(UsageError, match="privileged observation keys"):
        check_blind_observation(arm, "hw")
