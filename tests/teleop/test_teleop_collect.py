"""Demo collection end to end: real Reach env, real zarr store, real keyboard pipe,
real subprocess killed with SIGKILL and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import roborl
from roborl.store.store import EP_INTERRUPTED, EP_SUCCESS, EP_TERMINATED, EP_TRUNCATED, ReplayStore
from roborl.teleop import DemoCollector, RateLoop, ScriptedConfig, TeleopConfig, action_layout
from roborl.teleop.config import KeyboardConfig
from roborl.teleop.keyboard import KeyboardDevice
from roborl.teleop.scripted import ScriptedDevice

ENV = "roborl/Reach-v0"


def reach_policy(obs: np.ndarray) -> np.ndarray:
    """P-controller on the goal - ee part of Reach's observation (last 3 entries)."""
    return np.r_[np.clip(obs[-3:] / 0.03, -1, 1), 1.0].astype(np.float32)


def open_store(path: Path, env: gym.Env) -> ReplayStore:
    return ReplayStore.open_or_create(path, env_id=ENV, observation_space=env.observation_space,
                                      action_space=env.action_space)


def wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_scripted_keep_discard_and_labels(tmp_path):
    env = roborl.make_env(ENV)
    layout = action_layout(env)
    # the task's own scripted expert (roborl.envs.expert) drives
    dev = ScriptedDevice(env, layout, ScriptedConfig(decisions=("keep", "discard", "failure", "success")))
    dev.open()
    store = open_store(tmp_path / "s", env)
    hz = 200.0
    s = DemoCollector(env, dev, store, TeleopConfig(hz=hz), layout=layout).run(3)
    assert (s.kept, s.discarded, s.already) == (3, 1, 0)
    eps = store.episodes("demo")
    assert len(eps) == 3 and store.num_episodes("online") == 0
    flags = eps[:, 2]
    assert flags[0] & EP_SUCCESS          # "keep": the env's own label (the expert reaches the goal)
    assert not flags[1] & EP_SUCCESS      # "failure" overrides the env's success flags
    assert flags[2] & EP_SUCCESS
    assert np.all(flags & (EP_TERMINATED | EP_TRUNCATED)) and not np.any(flags & EP_INTERRUPTED)
    ep1 = store.read_episode("demo", 1)
    assert not ep1["is_success"].any() and not ep1["intervention"].any()
    assert s.success_rate == pytest.approx(2 / 3) and s.mean_length == pytest.approx(eps[:, 1].mean())
    # stored timestamps are the loop's real tick times: increasing, never faster than the rate
    ts = store.read_episode("demo", 2)["timestamp"]
    assert np.all(np.diff(ts) > 0)
    # no tick runs before its deadline and deadlines are >= 1/hz apart; only the first tick's
    # own wake-up delay can shorten the span
    assert ts[-1] - ts[0] >= (len(ts) - 1) / hz - s.rate.max_jitter_s - 1e-6
    # the stored observations chain: next_obs[t] == obs[t+1]
    ep = store.read_episode("demo", 0)
    np.testing.assert_array_equal(ep["next_obs"][:-1], ep["obs"][1:])
    store.close()
    env.close()


def test_keyboard_session_discard_redo_and_labels(tmp_path):
    env = roborl.make_env(ENV)
    layout = action_layout(env)
    r, w = os.pipe()
    dev = KeyboardDevice(KeyboardConfig(hold_s=600.0), stream=r)
    dev.open()
    store = open_store(tmp_path / "k", env)
    col = DemoCollector(env, dev, store, TeleopConfig(hz=50.0), layout=layout)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("s", col.run(2)), daemon=True)
    th.start()
    try:
        os.write(w, b"\r")                                   # start
        wait_for(lambda: len(col.steps) >= 2)
        os.write(w, b"x")                                    # stop -> review (or the env ended it already)
        wait_for(lambda: col.state == "review")
        os.write(w, b"z")                                    # discard -> redo
        wait_for(lambda: col.summary.discarded == 1)
        os.write(w, b"\r")
        wait_for(lambda: len(col.steps) >= 2)
        os.write(w, b"n")                                    # failure: ends and keeps at once
        wait_for(lambda: col.summary.kept == 1)
        os.write(w, b"\r")
        wait_for(lambda: len(col.steps) >= 1)
        os.write(w, b"w ")                                   # drive +x, close the gripper
        wait_for(lambda: len(col.steps) >= 4)
        os.write(w, b"y")                                    # success
        th.join(timeout=60)
        assert not th.is_alive()
    finally:
        dev.close()
        os.close(w)
        os.close(r)
    s = out["s"]
    assert (s.kept, s.discarded) == (2, 1)
    eps = store.episodes("demo")
    assert len(eps) == 2
    assert not eps[0, 2] & EP_SUCCESS and eps[1, 2] & EP_SUCCESS
    last = store.read_episode("demo", 1)
    assert last["is_success"][-1] and last["truncated"][-1]  # operator-ended: bootstraps like a time limit
    # after "w " the commanded action is +x with the gripper closed (-1)
    assert np.any((last["action"][:, 0] == 1.0) & (last["action"][:, 3] == -1.0))
    assert np.all(last["action"][:, 1:3] == 0)
    store.close()
    env.close()


class SlowEveryNth(gym.Wrapper):
    """An artificially slow step: every n-th step takes ``delay`` seconds."""

    def __init__(self, env: gym.Env, n: int, delay: float) -> None:
        super().__init__(env)
        self.n, self.delay, self.k = n, delay, 0

    def step(self, action):
        self.k += 1
        if self.k % self.n == 0:
            time.sleep(self.delay)
        return self.env.step(action)


def test_overruns_reported_under_a_slow_step(tmp_path):
    hz = 50.0
    env = SlowEveryNth(roborl.make_env(ENV), n=10, delay=3.0 / hz)
    layout = action_layout(env)
    dev = ScriptedDevice(env, layout, policy=reach_policy)
    store = open_store(tmp_path / "o", env)
    s = DemoCollector(env, dev, store, TeleopConfig(hz=hz), layout=layout).run(1)
    assert s.kept == 1 and s.lengths == [50]
    assert s.rate is not None
    assert s.rate.overruns >= 5                       # 5 slow steps in the 50-step episode
    assert s.rate.worst_lateness_s >= 2.0 / hz - 1e-3
    ts = store.read_episode("demo", 0)["timestamp"]
    d = np.diff(ts)
    # the steps after each slow one show the true (late) time: 3 periods, not one
    slow = d[9::10]
    assert len(slow) >= 4 and np.all(slow >= 3.0 / hz - 1e-3)
    assert "overruns" in " ".join(s.lines())
    store.close()
    env.close()


def test_manual_clock_rate_loop_in_collector(tmp_path):
    """Deterministic timing through an injected clock: every stored step is exactly 1/hz apart."""
    t = [0.0]
    loop = RateLoop(10.0, clock=lambda: t[0], sleep=lambda dt: t.__setitem__(0, t[0] + dt), wall=lambda: 5.0)
    env = roborl.make_env(ENV)
    layout = action_layout(env)
    store = open_store(tmp_path / "m", env)
    s = DemoCollector(env, ScriptedDevice(env, layout, policy=reach_policy), store, TeleopConfig(hz=10.0),
                      layout=layout, rate_loop=loop).run(1)
    ts = store.read_episode("demo", 0)["timestamp"]
    np.testing.assert_allclose(np.diff(ts), 0.1)
    assert s.rate.overruns == 0 and s.rate.actual_hz == pytest.approx(10.0)
    store.close()
    env.close()
