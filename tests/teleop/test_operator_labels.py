"""Operator verdict keys during training: the keyboard's y / n, a gamepad's success / failure buttons and
SpaceMouse buttons bound to success / failure end the episode at that step with that label in a real
store (the same path the off-policy runner takes: DeviceIntervention -> env_step -> ReplayStore)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from roborl.config import build
from roborl.envs.config import EnvConfig, build_env
from roborl.envs.step import env_step
from roborl.store import ReplayStore
from roborl.store.index import EP_SUCCESS, EP_TERMINATED, EP_TRUNCATED
from roborl.teleop.device import action_layout
from roborl.teleop.intervention import DeviceIntervention


def _wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def _run_episode(tmp_path: Path, device: Any, press: Callable[[], None], at: int = 3) -> tuple[np.ndarray, Any]:
    """Step Reach with zero actions, ``press()`` the verdict before step ``at``; -> (episodes [E, 3], last Step)."""
    env = build_env(EnvConfig(id="roborl/Reach-v0", max_episode_steps=50), seed=0)
    layout = action_layout(env)
    source = DeviceIntervention(device, layout)
    store = ReplayStore.create(tmp_path / "s", env_id="roborl/Reach-v0", observation_space=env.observation_space,
                               action_space=env.action_space)
    try:
        obs, _ = env.reset(seed=0)
        source.reset(obs)
        store.start_episode(obs)
        for i in range(10):
            if i == at:
                press()
            s = env_step(env, obs, np.zeros(env.action_space.shape, np.float32), sink=store, source=source)
            obs = s.next_obs
            if s.done:
                break
        assert i == at, f"the verdict did not end the episode at step {at} (ended: {s.done} at {i})"
        return store.episodes("online"), s
    finally:
        source.close()
        store.close()
        env.close()


def _check(eps: np.ndarray, step: Any, success: bool, at: int = 3) -> None:
    assert eps.shape[0] == 1 and int(eps[0, 1]) == at + 1
    flags = int(eps[0, 2])
    assert bool(flags & EP_SUCCESS) == success and step.success == success
    assert bool(flags & EP_TERMINATED) == success and bool(flags & EP_TRUNCATED) == (not success)
    assert step.info["operator_label"] == int(success)


@pytest.mark.parametrize("key, success", [("y", True), ("n", False)])
def test_keyboard_verdict_keys(tmp_path: Path, key: str, success: bool) -> None:
    from roborl.teleop.config import KeyboardConfig
    from roborl.teleop.keyboard import KeyboardDevice

    r, w = os.pipe()
    dev = KeyboardDevice(KeyboardConfig(hold_s=60.0), stream=r)

    def press() -> None:
        os.write(w, key.encode())
        _wait_for(lambda: dev.keys_read >= 1)

    try:
        eps, s = _run_episode(tmp_path, dev, press)
    finally:
        os.close(w)
        os.close(r)
    _check(eps, s, success)


@pytest.mark.parametrize("button, success", [(0, True), (2, False)])  # GamepadConfig's default bindings
def test_gamepad_verdict_buttons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, button: int, success: bool) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    pg = pytest.importorskip("pygame")
    from roborl.teleop.config import GamepadConfig
    from roborl.teleop.gamepad import GamepadDevice

    cfg = GamepadConfig()
    assert cfg.buttons[str(button)] == ("success" if success else "failure")
    dev = GamepadDevice(cfg, require_joystick=False)

    def press() -> None:
        pg.event.post(pg.event.Event(pg.JOYBUTTONDOWN, instance_id=0, joy=0, button=button))

    eps, s = _run_episode(tmp_path, dev, press)
    _check(eps, s, success)


class _HidHandle:
    """The hidapi handle of an attached SpaceMouse: raw HID reports queued by the test, read non-blocking."""

    def __init__(self) -> None:
        self.reports: list[list[int]] = []

    def open_path(self, path: bytes) -> None: ...

    def set_nonblocking(self, flag: int) -> None: ...

    def read(self, n: int) -> list[int]:
        return self.reports.pop(0) if self.reports else []

    def close(self) -> None: ...


@pytest.mark.parametrize("button, success", [(0, True), (1, False)])
def test_spacemouse_verdict_buttons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, button: int, success: bool) -> None:
    import types

    from roborl.teleop import spacemouse
    from roborl.teleop.config import SpaceMouseConfig

    handle = _HidHandle()
    hid = types.SimpleNamespace(
        enumerate=lambda: [{"vendor_id": 0x256F, "product_id": 0xC635, "product_string": "SpaceMouse Compact",
                            "manufacturer_string": "3Dconnexion", "path": b"/dev/hidraw7"}],
        device=lambda: handle)
    monkeypatch.setattr(spacemouse, "_import_hid", lambda: hid)
    cfg = build(SpaceMouseConfig, {"buttons": {"0": "success", "1": "failure"}})
    dev = spacemouse.SpaceMouseDevice(cfg)

    def press() -> None:
        handle.reports += [[3, 1 << button, 0], [3, 0, 0]]  # button down, then up (report 3: the bitmask)

    eps, s = _run_episode(tmp_path, dev, press)
    _check(eps, s, success)


@pytest.mark.parametrize("decision, success", [("success", True), ("failure", False)])
def test_scripted_device_verdicts(tmp_path: Path, decision: str, success: bool) -> None:
    from roborl.teleop.config import ScriptedConfig
    from roborl.teleop.scripted import ScriptedDevice

    env = build_env(EnvConfig(id="roborl/Reach-v0", max_episode_steps=50), seed=0)
    dev = ScriptedDevice(env, action_layout(env), ScriptedConfig(decisions=(decision,)))
    eps, s = _run_episode(tmp_path, dev, lambda: dev.on_episode_end(False))  # review: the next read is the verdict
    env.close()
    _check(eps, s, success)
