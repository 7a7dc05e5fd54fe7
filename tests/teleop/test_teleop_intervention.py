"""Interventions: the operator's action is executed, flagged in the store, copied to the demo
partition, and the rate is reported per episode."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import roborl
from roborl.config import build
from roborl.store.store import ReplayStore
from roborl.teleop import (DeviceIntervention, InterventionConfig, InterventionSource, ScriptedIntervention,
                           action_layout, build_intervention, run_episode)
from roborl.teleop.config import KeyboardConfig
from roborl.teleop.keyboard import KeyboardDevice
from roborl.teleop.scripted import make_expert

ENV = "roborl/Reach-v0"


def test_scripted_takeover_is_flagged_and_copied_to_demo(tmp_path):
    env = roborl.make_env(ENV)
    expert = make_expert(env)
    src = ScriptedIntervention(expert, every=1, start_step=5, duration=12)
    assert isinstance(src, InterventionSource)
    store = ReplayStore.create(tmp_path / "s", env_id=ENV, observation_space=env.observation_space,
                               action_space=env.action_space)
    policy = lambda obs: np.zeros(4, np.float32)  # a policy that does nothing
    m = run_episode(env, policy, src, store, seed=3)
    n = int(m["length"])
    assert m["intervention_steps"] == 12 and m["interventions"] == 1
    assert m["intervention_rate"] == pytest.approx(12 / n) and m["demo_segments"] == 1
    ep = store.read_episode("online", 0)
    flags = ep["intervention"]
    assert flags.sum() == 12 and flags[5:17].all()
    # the policy's proposal is kept as `action`; the operator's action was executed
    assert np.all(ep["action"] == 0)
    assert np.all(ep["executed_action"][~flags] == 0)
    assert np.abs(ep["executed_action"][flags]).max() > 0.1
    # the segment went to the demo partition as its own episode, all flagged, ending in a truncation
    assert store.num_episodes("demo") == 1
    demo = store.read_episode("demo", 0)
    assert len(demo["reward"]) == 12 and demo["intervention"].all() and demo["truncated"][-1]
    np.testing.assert_array_equal(demo["executed_action"], ep["executed_action"][flags])
    np.testing.assert_array_equal(demo["obs"], ep["obs"][flags])
    # no takeover in an episode off the schedule
    src2 = ScriptedIntervention(expert, every=2, start_step=0, duration=5)
    rates = [run_episode(env, policy, src2, store, seed=s)["intervention_rate"] for s in range(2)]
    assert rates[0] > 0 and rates[1] == 0
    store.close()
    env.close()


def test_expert_takeover_beats_idle_policy():
    """The takeover really drives the robot: the expert run for the whole episode succeeds."""
    env = roborl.make_env(ENV)
    src = ScriptedIntervention(make_expert(env), every=1, start_step=0, duration=10_000)
    m = run_episode(env, lambda o: np.zeros(4, np.float32), src, None, seed=0)
    assert m["intervention_rate"] == 1.0 and m["success"] == 1.0
    idle = run_episode(env, lambda o: np.zeros(4, np.float32), None, None, seed=0)
    assert idle["success"] == 0.0 and idle["intervention_rate"] == 0.0
    env.close()


def test_keyboard_intervene_toggle(tmp_path):
    env = roborl.make_env(ENV)
    layout = action_layout(env)
    r, w = os.pipe()
    dev = KeyboardDevice(KeyboardConfig(hold_s=600.0), stream=r)
    src = DeviceIntervention(dev, layout, zero_warn_s=0)
    obs, _ = env.reset(seed=0)
    try:
        src.reset(obs)
        assert src.poll(obs) == (False, None)
        os.write(w, b"iwo")  # intervene on, +x, gripper open
        deadline = time.monotonic() + 10
        while dev.keys_read < 3:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        active, a = src.poll(obs)
        assert active and a.dtype == np.float32
        np.testing.assert_array_equal(a, [1.0, 0.0, 0.0, 1.0])
        assert src.poll(obs)[0]           # stays on until toggled off
        os.write(w, b"i")
        while dev.keys_read < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert src.poll(obs) == (False, None)
        stats = src.episode_stats()
        assert stats["intervention_steps"] == 2 and stats["interventions"] == 1
        assert stats["intervention_rate"] == pytest.approx(2 / 4)
    finally:
        src.close()
        os.close(w)
        os.close(r)
        env.close()


def test_build_intervention_from_config():
    env = roborl.make_env(ENV)
    assert build_intervention(InterventionConfig(), env) is None
    cfg = build(InterventionConfig, {"source": "scripted", "every": 1, "start_step": 0, "duration": 3})
    src = build_intervention(cfg, env)
    obs, _ = env.reset(seed=1)
    src.reset(obs)
    got = [src.poll(obs)[0] for _ in range(5)]
    assert got == [True, True, True, False, False]
    env.close()
