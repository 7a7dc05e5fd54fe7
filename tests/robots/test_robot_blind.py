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


PRIVILEGED = {"is_success", "success", "goal", "object_pos", "safety_episode", "privileged_state",
              "environment_state", "dr_params"}


def _check_blind(headers: list[dict], arrays: list[set[str]], want_arrays: set[str]) -> None:
    for h in headers:
        assert h["reward"] == 0.0 and h["terminated"] is False
        assert set(h["info"]) <= BLIND_INFO_KEYS, h["info"]
        assert not _keys(h["info"]) & PRIVILEGED, h["info"]
        assert not set(h) & PRIVILEGED, h
    for names in arrays:
        assert names == want_arrays, names


def test_blind_twin_sends_no_reward_success_or_privileged_info(tmp_path: Path):
    """proprio mode (no rendering): the expert acts from a direct state-mode copy of the task (same
    seed, lockstep twin), since the blind observation no longer shows the goal."""
    log = tmp_path / "log"
    plan = [(0, True), (1, False), (2, True)]  # (seed, expert?)
    headers: list[dict] = []
    arrays: list[set[str]] = []
    direct = []
    env = roborl.make_env(TASK)
    with ServerProcess(f"sim:{TASK}", hz=200, sim_clock="lockstep",
                       extra=["--blind", "--log-dir", str(log), "env.kwargs.obs_mode=proprio"]) as srv:
        with Channel("127.0.0.1", srv.port, timeout_s=5.0) as ch:
            hello = ch.call("hello").header
            assert hello["blind"] is True
            assert set(hello["observation_space"]["spaces"]) == {"proprio"}
            for seed, expert in plan:
                obs, _ = env.reset(seed=seed)
                m = ch.call("reset", {"seed": seed}, timeout_s=30.0)
                headers.append(m.header)
                arrays.append(set(m.arrays))
                for _ in range(25):
                    a = _policy(obs, expert)
                    obs, _, _, _, info = env.step(a)
                    m = ch.call("step", arrays={"action": a})
                    headers.append(m.header)
                    arrays.append(set(m.arrays))
                    # the twin follows the same trajectory: its proprio is the state's robot prefix
                    np.testing.assert_allclose(m.arrays["obs/proprio"], obs[:7], atol=1e-5)
                direct.append(bool(info["is_success"]))
                m = ch.call("observe")
                headers.append(m.header)
                arrays.append(set(m.arrays))
    env.close()
    assert len(headers) == len(plan) * 27  # (reset, 25 steps, observe) per episode
    _check_blind(headers, arrays, {"obs/proprio"})
    assert direct == [True, False, True]  # the check below can tell success from failure
    # The truth, as the server logged it, matches the task run directly with the same actions.
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


def test_blind_twin_in_proprio_pixels_mode_serves_only_proprio_and_cameras(gl_env: dict[str, str]):
    """The blind default for our arm tasks (no obs_mode given): proprio + uint8 camera images, nothing
    else, through a real server subprocess; the same server without --blind does carry the truth."""
    names = {"obs/proprio", "obs/pixels/front", "obs/pixels/wrist"}
    seen: dict[bool, tuple[list[dict], list[set[str]], dict]] = {}
    for blind in (True, False):
        headers, arrays = [], []
        extra = ["env.kwargs.image_size=32"] + (["--blind"] if blind else ["env.kwargs.obs_mode=proprio+pixels"])
        with ServerProcess("sim:roborl/Push-v0", hz=200, sim_clock="lockstep", extra=extra, env=gl_env) as srv:
            with Channel("127.0.0.1", srv.port, timeout_s=10.0) as ch:
                hello = ch.call("hello").header
                m = ch.call("reset", {"seed": 0}, timeout_s=60.0)
                headers.append(m.header)
                arrays.append(set(m.arrays))
                for _ in range(5):
                    m = ch.call("step", arrays={"action": np.array([1, 0, 0, 0], np.float32)})
                    headers.append(m.header)
                    arrays.append(set(m.arrays))
                front = np.array(m.arrays["obs/pixels/front"])
        assert front.dtype == np.uint8 and front.shape == (32, 32, 3) and front.std() > 0
        seen[blind] = (headers, arrays, hello)
    headers, arrays, hello = seen[True]
    space = hello["observation_space"]
    assert set(space["spaces"]) == {"proprio", "pixels"} and set(space["spaces"]["pixels"]["spaces"]) == {"front", "wrist"}
    _check_blind(headers, arrays, names)
    headers, arrays, _ = seen[False]  # the control: the same task and mode, not blind
    assert arrays[-1] == names and "is_success" in headers[-1]["info"] and "privileged_state" in headers[-1]["info"]
    assert headers[-1]["reward"] != 0.0


def test_blind_refuses_state_mode_with_one_line():
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "robot", "serve", "--backend", f"sim:{TASK}", "--blind",
                        "--seconds", "1", "env.kwargs.obs_mode=state"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "obs_mode=state" in r.stderr, r.stderr


def test_blind_refuses_privileged_observation_keys_it_cannot_filter():
    arm = hw.make()
    check_blind_observation(arm, "hw")  # declares none: fine
    arm.privileged_obs_keys = ("object_pos",)
    with pytest.raises(UsageError, match="privileged observation keys"):
        check_blind_observation(arm, "hw")
