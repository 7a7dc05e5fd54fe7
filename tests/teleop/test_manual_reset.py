"""ManualReset: the robot holds until the operator's START (scripted device, keyboard through a real
pipe), the timeout path, QUIT, and the reset config."""
from __future__ import annotations

import os
import threading
import time

import gymnasium as gym
import numpy as np
import pytest

import roborl.envs  # noqa: F401 - registers roborl/Reach-v0
from roborl.config import ConfigError, build
from roborl.errors import UsageError
from roborl.teleop.config import KeyboardConfig, ResetConfig
from roborl.teleop.device import Event
from roborl.teleop.keyboard import KeyboardDevice
from roborl.teleop.reset import ManualReset, ResetAborted, ResetTimeout, apply_reset
from roborl.teleop.scripted import ScriptedDevice


class StepCounter(gym.Wrapper):
    """Counts actions that reach the env (the robot must get none while it holds)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0
        self.resets = 0

    def step(self, action):
        self.steps += 1
        return self.env.step(action)

    def reset(self, **kw):
        self.resets += 1
        return self.env.reset(**kw)


@pytest.fixture
def reach():
    env = StepCounter(gym.make("roborl/Reach-v0", max_episode_steps=5))
    yield env
    env.close()


def test_scripted_device_answers_the_prompt(reach) -> None:
    dev = ScriptedDevice(reach, ("x", "y", "z", "grip"), policy=lambda obs: np.zeros(4, np.float32))
    dev.open()
    lines: list[str] = []
    env = ManualReset(reach, dev, timeout_s=5.0, prompt=lines.append)
    obs, info = env.reset(seed=0)
    assert len(lines) == 1 and "press START" in lines[0] and "scripted" in lines[0]
    assert reach.resets == 1 and reach.steps == 0 and "reset_wait_s" in info
    # One episode as the teleop loop runs it: start, drive, end, review decision; then the next reset.
    dev.on_episode_start(obs)
    done = False
    while not done:
        obs, _, term, trunc, _ = env.step(dev_action(dev, obs))
        done = term or trunc
    dev.on_episode_end(False)
    steps = reach.steps
    env.reset(seed=1)                      # reads the review decision (keep), then START
    assert reach.resets == 2 and reach.steps == steps and len(lines) == 2 and "episode 2" in lines[1]


def dev_action(dev: ScriptedDevice, obs) -> np.ndarray:
    cmd = dev.read(obs)
    return np.array([*cmd.motion[:3], cmd.grip], np.float32)


def test_waits_for_enter_on_the_keyboard(reach) -> None:
    r, w = os.pipe()
    dev = KeyboardDevice(KeyboardConfig(), stream=r)
    dev.open()
    pressed = threading.Event()

    def operator() -> None:
        time.sleep(0.3)
        pressed.set()
        os.write(w, b"\r")                 # enter -> start

    try:
        lines: list[str] = []
        t = threading.Thread(target=operator)
        t.start()
        env = ManualReset(reach, dev, timeout_s=30.0, prompt=lines.append)
        env.reset(seed=0)
        assert pressed.is_set() and reach.resets == 1 and reach.steps == 0  # it returned only after the key
        assert "key enter" in lines[0]
        t.join()
    finally:
        dev.close()
        os.close(r)
        os.close(w)


def test_timeout_pauses_with_one_line_and_a_second_reset_resumes(reach) -> None:
    r, w = os.pipe()
    dev = KeyboardDevice(KeyboardConfig(), stream=r)
    dev.open()
    try:
        env = ManualReset(reach, dev, timeout_s=0.2, prompt=lambda s: None)
        with pytest.raises(ResetTimeout) as ei:
            env.reset(seed=0)
        msg = str(ei.value)
        assert "\n" not in msg and "no START" in msg and "0 s" in msg and "paused" in msg
        assert isinstance(ei.value, UsageError)   # uncaught: the CLI prints one line and exits 2
        assert reach.resets == 0 and reach.steps == 0
        os.write(w, b"\r")
        env.timeout_s = 10.0
        env.reset(seed=0)                          # the loop caught it and waits again
        assert reach.resets == 1
        os.write(w, b"\x1b")                       # esc -> quit
        with pytest.raises(ResetAborted, match="quit"):
            env.reset(seed=1)
    finally:
        dev.close()
        os.close(r)
        os.close(w)


def test_reset_config_and_apply(reach) -> None:
    assert build(ResetConfig, {}).reset_mode == "auto"
    with pytest.raises(ConfigError, match="reset_mode"):
        build(ResetConfig, {"reset_mode": "manaul"})
    with pytest.raises(ConfigError, match="reset_timeout_s"):
        build(ResetConfig, {"reset_timeout_s": 0})
    assert apply_reset(reach, build(ResetConfig, {}), None) is reach
    with pytest.raises(UsageError, match="needs an operator device"):
        apply_reset(reach, build(ResetConfig, {"reset_mode": "manual"}), None)
    dev = ScriptedDevice(reach, ("x", "y", "z", "grip"), policy=lambda obs: np.zeros(4, np.float32))
    env = apply_reset(reach, build(ResetConfig, {"reset_mode": "manual", "reset_timeout_s": 7}), dev,
                      prompt=lambda s: None)
    assert isinstance(env, ManualReset) and env.timeout_s == 7.0
    assert Event.START in dev.read(None).events  # idle scripted device answers START
