"""The robot server and the robot:// client, with real server subprocesses on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import zmq

import roborl  # noqa: F401 - registers roborl/<Task>-v0
from roborl.robots.client import make_robot_env, parse_robot_url
from roborl.robots.launch import ServerProcess, free_port
from roborl.robots.transport import PeerUnavailable, RemoteError, decode, encode
from roborl.errors import UsageError

# Our arm task once it is registered; until then any gymnasium MuJoCo task exercises the same code.
TASK = "roborl/Reach-v0" if "roborl/Reach-v0" in gym.registry else "Reacher-v5"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roborl.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def realtime_server():
    with ServerProcess(f"sim:{TASK}", hz=50) as srv:
        yield srv


def test_watchdog_holds_after_commands_stop(realtime_server):
    env = make_robot_env(realtime_server.url, timeout_s=2.0)
    try:
        env.reset(seed=0)
        # Read before the steps: read after them, a stats round trip slower than 2 periods on a
        # loaded machine would already include this test's watchdog event.
        before = env.stats()["counts"].get("watchdog_events", 0)
        push = np.ones(env.action_space.shape, np.float32) * 0.8
        for _ in range(5):
            _, _, term, trunc, info = env.step(push)
            assert not info["watchdog"]
            if term or trunc:
                break
        time.sleep(0.3)  # 15 control periods without a command
        _, info_a = env.observe()
        assert info_a["holding"] is True
        stats = env.stats()
        assert stats["counts"]["watchdog_events"] == before + 1
        assert stats["counts"]["watchdog_held_ticks"] >= 1
        if "ee_pos" in info_a:  # the arm: held means the end effector stays put
            time.sleep(0.2)
            _, info_b = env.observe()
            np.testing.assert_allclose(info_a["ee_pos"], info_b["ee_pos"], atol=2e-3)
        # The next command is served and its reply says the robot was held meanwhile.
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert info["watchdog"] is True and info["held_ticks"] >= 1
        _, info_c = env.observe()
        assert info_c["holding"] is False
    finally:
        env.close()


def test_estop_latches_until_reset(realtime_server):
    env = make_robot_env(realtime_server.url)
    try:
        env.reset(seed=1)
        env.step(np.zeros(env.action_space.shape, np.float32))
        env.estop()
        env._needs_reset = False  # bypass the client-side guard: the server itself must refuse
        with pytest.raises(RemoteError, match="e-stopped"):
            env.step(np.zeros(env.action_space.shape, np.float32))
        env.reset(seed=1)
        env.step(np.zeros(env.action_space.shape, np.float32))
    finally:
        env.close()


def test_only_the_controlling_client_may_step(realtime_server):
    a, b = make_robot_env(realtime_server.url), make_robot_env(realtime_server.url)
    try:
        a.reset(seed=2)
        b._needs_reset = False
        with pytest.raises(RemoteError, match="does not control"):
            b.step(np.zeros(b.action_space.shape, np.float32))
        a.step(np.zeros(a.action_space.shape, np.float32))  # the owner still works
        b.observe()  # anyone may observe
    finally:
        a.close()
        b.close()


def _raw(port: int, frames: list[bytes], timeout_ms: int = 3000) -> dict:
    """One request on a raw REQ socket (what a foreign or broken client would send)."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        s.send_multipart(frames)
        return decode(s.recv_multipart()).header
    finally:
        s.close(0)


def test_malformed_and_unauthenticated_requests_are_refused_and_server_keeps_serving():
    with ServerProcess(f"sim:{TASK}", hz=50, token="s3cret") as srv:
        tok = {"token": "s3cret", "seq": 1, "session": "t"}
        cases = {
            "garbage": [b"\xff\x00not json"],
            "not an object": [b"[1, 2]"],
            "no version": [json.dumps({"type": "ping", "seq": 1}).encode()],
            "missing frames": encode({"type": "step", **tok}, {"action": np.zeros(2, np.float32)})[:1],
            "short payload": [encode({"type": "step", **tok}, {"action": np.zeros(2, np.float32)})[0], b"\x00" * 3],
            "bad dtype": [json.dumps({"v": 1, "type": "step", **tok, "arrays": [
                {"name": "action", "dtype": "|O", "shape": [1]}]}).encode(), b"\x00" * 8],
        }
        for name, frames in cases.items():
            rep = _raw(srv.port, frames)
            assert rep["type"] == "error" and rep["code"] == "malformed", name
        assert _raw(srv.port, encode({"type": "ping", "seq": 1, "session": "x"}))["code"] == "unauthorized"
        assert _raw(srv.port, encode({"type": "ping", "seq": 1, "session": "x", "token": "wrong"}))["code"] == "unauthorized"
        assert _raw(srv.port, encode({"type": "shutdown", **tok}))["code"] == "bad_type"
        assert _raw(srv.port, encode({"type": "reset", **tok, "seed": -3}))["code"] == "rejected"
        # A client without the token gets a one-line refusal, not a hang.
        with pytest.raises(RemoteError, match="token"):
            make_robot_env(srv.url)
        # ... and the server still serves an authorized client, including its safety checks.
        env = make_robot_env(srv.url + "?token=s3cret")
        try:
            env.reset(seed=0)
            _, _, _, _, info = env.step(np.full(env.action_space.shape, 5.0, np.float32))  # clipped, not refused
            assert info["safety_modified"] is True and info["safety"]["clipped"] == 1
            assert np.all(np.abs(info["executed_action"]) <= 1.0)
            _, _, _, _, info = env.step(np.full(env.action_space.shape, np.nan, np.float32))  # held, not refused
            assert info["safety"]["nonfinite"] == 1
            if env.action_mode == "ee_delta":  # zero motion, the gripper command kept
                assert info["executed_action"][:3] == [0.0, 0.0, 0.0] and info["executed_action"][3] == 1.0
            with pytest.raises(RemoteError, match="shape"):  # misshaped: refused, nothing executed
                env.channel.call("step", arrays={"action": np.zeros(7, np.float32)})
            counts = env.stats()["counts"]
        finally:
            env.close()
        assert counts["refused_malformed"] == len(cases)
        assert counts["refused_unauthorized"] >= 3
        assert counts["refused_bad_type"] == 1 and counts["actions_rejected"] == 1


def test_resent_step_is_executed_once(realtime_server):
    """The lazy-pirate resend reuses its seq: the server answers from its cache, never steps twice."""
    env = make_robot_env(realtime_server.url)
    try:
        env.reset(seed=3)
        ch = env.channel
        steps_before = env.stats()["counts"].get("steps", 0)
        ch.seq += 1
        frames = encode({"type": "step", "seq": ch.seq, "session": ch.session},
                        {"action": np.zeros(env.action_space.shape, np.float32)})
        s = ch._open()
        s.send_multipart(frames)
        s.send_multipart(frames)  # a duplicate while pending is absorbed (one reply, at the tick)
        replies = []
        assert s.poll(3000)
        replies.append(decode(s.recv_multipart()).header)
        assert not s.poll(100)
        s.send_multipart(frames)  # a duplicate after the reply: answered from the cache
        assert s.poll(3000)
        replies.append(decode(s.recv_multipart()).header)
        assert replies[0]["type"] == "step" and replies[0]["tick"] == replies[1]["tick"]
        assert [r["seq"] for r in replies] == [ch.seq] * 2
        counts = env.stats()["counts"]
        assert counts["steps"] == steps_before + 1 and counts["resends_answered"] >= 1
    finally:
        env.close()


def test_killed_server_gives_a_clear_error_within_the_deadline():
    srv = ServerProcess(f"sim:{TASK}", hz=50).start()
    env = make_robot_env(srv.url, timeout_s=1.0)
    try:
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        srv.kill()
        t0 = time.monotonic()
        with pytest.raises(PeerUnavailable) as ei:
            env.step(np.zeros(env.action_space.shape, np.float32))
        elapsed = time.monotonic() - t0
        assert isinstance(ei.value, ConnectionError) and isinstance(ei.value, UsageError)
        assert "\n" not in str(ei.value) and f"127.0.0.1:{srv.port}" in str(ei.value)
        assert elapsed < 10.0  # bounded by its 1 s deadline (+ scheduling slack on a loaded machine): no hang
    finally:
        env.close()
        srv.stop()


def test_cli_one_line_errors():
    dead = free_port()
    r = _cli("robot", "stats", f"robot://127.0.0.1:{dead}", "--timeout", "0.5")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot connect" in r.stderr
    r = _cli("robot", "serve", "--backend", f"sim:{TASK}", "--host", "0.0.0.0", "--port", str(dead))
    assert r.returncode == 2 and "token" in r.stderr and "Traceback" not in r.stderr
    r = _cli("robot", "serve", "--backend", "ur5:10.0.0.2", "--port", str(dead))
    assert r.returncode == 2 and "unknown" in r.stderr
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_robot_url("robot://nohost")


def _rollout(env: gym.Env, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed feedback policy (deterministic given obs), so both paths must agree step by step."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, size=(env.action_space.shape[0], np.asarray(obs).shape[0])).astype(np.float32)
    obs_log, rew = [], []
    for _ in range(n):
        a = np.tanh(w @ np.asarray(obs, np.float32)).astype(np.float32)
        obs, r, term, trunc, _ = env.step(a)
        obs_log.append(np.asarray(obs, np.float32))
        rew.append(r)
        if term or trunc:
            break
    return np.array(obs_log), np.array(rew)


def test_policy_through_robot_matches_the_env_directly():
    with ServerProcess(f"sim:{TASK}", hz=200, sim_clock="lockstep") as srv:
        renv = make_robot_env(srv.url)
        try:
            through = [_rollout(renv, seed, 40) for seed in (0, 1)]
        finally:
            renv.close()
    denv = roborl.make_env(TASK)
    direct = [_rollout(denv, seed, 40) for seed in (0, 1)]
    denv.close()
    for (o1, r1), (o2, r2) in zip(through, direct):
        assert o1.shape == o2.shape
        np.testing.assert_allclose(o1, o2, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-5)


def test_watchdog_log_is_rate_limited():
    """A flapping client makes many watchdog events but few log lines: the loop writes them, and a full
    stderr pipe would otherwise block it."""
    with ServerProcess(f"sim:{TASK}", hz=100) as srv:
        env = make_robot_env(srv.url)
        try:
            env.reset(seed=0)
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:
                _, _, term, trunc, _ = env.step(np.zeros(env.action_space.shape, np.float32))
                if term or trunc:
                    env.reset(seed=1)
                time.sleep(0.04)  # 4 periods: the watchdog fires every time
            events = env.stats()["counts"]["watchdog_events"]
        finally:
            env.close()
    lines = [ln for ln in srv.stderr.splitlines() if "watchdog" in ln]
    assert events >= 10 and 1 <= len(lines) <= 3, (events, lines)
    assert any("more such events" in ln for ln in lines[1:]) or len(lines) == 1
