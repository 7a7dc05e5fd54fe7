"""Devices through the one Device interface: keyboard key events from a pipe, gamepad
events through pygame's dummy driver and event queue, SpaceMouse absence, shaping and
the zero-report watchdog."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from roborl.config import build
from roborl.errors import UsageError
from roborl.teleop import (DEVICES, Command, Device, Event, TeleopConfig, ZeroReportWarning, ZeroWatchdog,
                           from_env_action, make_device, to_env_action)
from roborl.teleop.config import GamepadConfig, KeyboardConfig
from roborl.teleop.device import shape_motion
from roborl.teleop.keyboard import KeyboardDevice, parse_keys


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def test_registry_lists_all_devices_and_rejects_unknown():
    assert set(DEVICES) == {"keyboard", "gamepad", "spacemouse", "scripted"}
    with pytest.raises(UsageError, match="did you mean 'gamepad'"):
        make_device(TeleopConfig(device="gamepda"))


def test_shaping_deadzone_sensitivity_and_clip():
    raw = np.array([0.04, -0.04, 0.5, 1.0, -1.0, 0.2])
    out = shape_motion(raw, deadzone=0.05, sensitivity=2.0, rot_sensitivity=0.5)
    assert out[0] == 0 and out[1] == 0                       # inside the deadzone
    assert out[2] == pytest.approx(2.0 * (0.5 - 0.05) / 0.95)  # rescaled, then scaled
    assert out[3] == pytest.approx(0.5) and out[4] == pytest.approx(-0.5)
    assert np.all(np.abs(shape_motion(np.ones(6), 0.0, 5.0)) <= 1.0)
    # continuous at the edge of the deadzone
    assert shape_motion(np.array([0.0500001, 0, 0, 0, 0, 0]), 0.05, 1.0)[0] == pytest.approx(0.0, abs=1e-5)


def test_layout_round_trip():
    layout = ("x", "y", "z", "yaw", "grip")
    a = np.array([0.1, -0.2, 0.3, 0.4, 1.0], np.float32)
    cmd = from_env_action(a, layout)
    np.testing.assert_allclose(to_env_action(cmd, layout), a)
    np.testing.assert_allclose(to_env_action(cmd, ("x", "y", "z", "grip")), [0.1, -0.2, 0.3, 1.0])


def test_parse_keys():
    assert parse_keys("w\x1b[A \r\x7fX\x1b") == ["w", "up", "space", "enter", "backspace", "x", "esc"]


def test_keyboard_key_events_from_a_pipe():
    r, w = os.pipe()
    cfg = KeyboardConfig(hold_s=60.0)  # holds outlast the test: no timing in the assertions
    dev = KeyboardDevice(cfg, stream=r, sensitivity=0.5)
    assert isinstance(dev, Device)
    dev.open()
    try:
        os.write(w, b"\r")           # enter -> start
        wait_for(lambda: dev.keys_read >= 1)
        cmd = dev.read()
        assert cmd.events == (Event.START,) and cmd.active
        os.write(w, b"wr\x1b[C ")    # +x, +z, right arrow (-y), space (grip toggle -> closed, -1)
        wait_for(lambda: dev.keys_read >= 5)
        cmd = dev.read()
        np.testing.assert_allclose(cmd.motion, [0.5, -0.5, 0.5, 0, 0, 0])
        assert cmd.grip == -1.0 and cmd.events == ()
        os.write(w, b"sif")          # -x replaces +x; intervene on; -z replaces +z
        wait_for(lambda: dev.keys_read >= 8)
        cmd = dev.read()
        np.testing.assert_allclose(cmd.motion[:3], [-0.5, -0.5, -0.5])
        assert cmd.events == (Event.INTERVENE_ON,)
        os.write(w, b"iyn\x7f?")     # intervene off, success, failure, discard, unknown key
        wait_for(lambda: dev.keys_read >= 13)
        assert dev.read().events == (Event.INTERVENE_OFF, Event.SUCCESS, Event.FAILURE, Event.DISCARD)
        assert dev.unknown_keys == ["?"]
    finally:
        dev.close()
        os.close(w)
        os.close(r)


def test_keyboard_hold_expires_with_clock():
    now = [0.0]
    dev = KeyboardDevice(KeyboardConfig(hold_s=0.3), stream=0, clock=lambda: now[0])
    dev.feed(["w"])
    assert dev.read().motion[0] == 1.0
    now[0] = 0.5
    cmd = dev.read()
    assert cmd.motion[0] == 0.0 and not cmd.active


def test_keyboard_without_tty_is_a_usage_error():
    code = ("import sys; from roborl.teleop.keyboard import KeyboardDevice\n"
            "from roborl.errors import UsageError\n"
            "try:\n    KeyboardDevice().open()\nexcept UsageError as e:\n    print(e); sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert p.returncode == 2 and "keyboard" in p.stdout and "TTY" in p.stdout


@pytest.fixture
def pygame_dummy(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    return pytest.importorskip("pygame")


def test_gamepad_events_through_pygame_queue(pygame_dummy):
    pg = pygame_dummy
    from roborl.teleop.gamepad import GamepadDevice

    cfg = build(GamepadConfig, {"axes": {"x": 1, "y": 0, "z": 4}, "invert": ["x"], "grip_axis": 5,
                                "buttons": {"0": "success", "3": "intervene", "7": "start"}})
    dev = GamepadDevice(cfg, deadzone=0.1, sensitivity=1.0, require_joystick=False)
    dev.open()
    try:
        post = pg.event.post
        post(pg.event.Event(pg.JOYAXISMOTION, instance_id=0, joy=0, axis=1, value=-0.55))  # stick up -> +x
        post(pg.event.Event(pg.JOYAXISMOTION, instance_id=0, joy=0, axis=0, value=0.05))   # inside deadzone
        post(pg.event.Event(pg.JOYAXISMOTION, instance_id=0, joy=0, axis=4, value=1.0))
        post(pg.event.Event(pg.JOYAXISMOTION, instance_id=0, joy=0, axis=5, value=0.8))    # trigger -> grip
        post(pg.event.Event(pg.JOYBUTTONDOWN, instance_id=0, joy=0, button=7))
        post(pg.event.Event(pg.JOYBUTTONDOWN, instance_id=0, joy=0, button=3))
        cmd = dev.read()
        np.testing.assert_allclose(cmd.motion, [0.5, 0.0, 1.0, 0, 0, 0], atol=1e-6)
        assert cmd.grip == pytest.approx(-0.8)  # pressed trigger closes
        assert cmd.events == (Event.START, Event.INTERVENE_ON) and cmd.active
        # state persists without new events; releasing the stick zeroes it
        np.testing.assert_allclose(dev.read().motion[0], 0.5, atol=1e-6)
        post(pg.event.Event(pg.JOYAXISMOTION, instance_id=0, joy=0, axis=1, value=0.0))
        post(pg.event.Event(pg.JOYAXISMOTION, instance_id=0, joy=0, axis=4, value=0.0))
        post(pg.event.Event(pg.JOYBUTTONDOWN, instance_id=0, joy=0, button=0))
        cmd = dev.read()
        assert np.all(cmd.motion == 0) and cmd.events == (Event.SUCCESS,)
        assert not dev.read().active
    finally:
        dev.close()


def test_gamepad_absent_lists_devices(pygame_dummy):
    from roborl.teleop.gamepad import GamepadDevice

    dev = GamepadDevice(GamepadConfig(index=3))
    with pytest.raises(UsageError, match=r"gamepad.*found: "):
        dev.open()
    dev.close()


def test_spacemouse_absent_lists_devices():
    from roborl.teleop.spacemouse import SpaceMouseDevice

    with pytest.raises(UsageError, match=r"spacemouse.*found"):
        SpaceMouseDevice().open()


def test_spacemouse_report_decoding():
    from roborl.teleop.spacemouse import decode_report

    axes = np.zeros(6)
    buttons: set[int] = set()
    decode_report([1, 0x5E, 0x01, 0xA2, 0xFE, 0, 0], axes, buttons)   # x=350, y=-350, z=0
    decode_report([2, 10, 0, 0, 0, 0xF6, 0xFF], axes, buttons)        # rx=10, rz=-10
    decode_report([3, 0b10, 0], axes, buttons)
    np.testing.assert_array_equal(axes, [350, -350, 0, 10, 0, -10])
    assert buttons == {1}


def test_zero_watchdog_warns_once_per_silent_stretch():
    wd = ZeroWatchdog(2.0, "spacemouse")
    assert wd.update(False, driving=False, now=0.0) is None
    assert wd.update(False, driving=True, now=1.0) is None      # silent stretch starts
    assert wd.update(False, driving=True, now=2.5) is None
    with pytest.warns(ZeroReportWarning, match="spacemouse reported only zeros"):
        assert wd.update(False, driving=True, now=3.1) is not None
    assert wd.update(False, driving=True, now=9.0) is None      # once per stretch
    assert wd.update(True, driving=True, now=9.1) is None       # input resumes: re-armed
    assert wd.update(False, driving=True, now=9.2) is None
    with pytest.warns(ZeroReportWarning):
        wd.update(False, driving=True, now=11.3)
    assert wd.warnings == 2
    assert ZeroWatchdog(0.0).update(False, True, now=100.0) is None  # 0 = off


def test_dead_keyboard_triggers_watchdog_while_driving():
    """A device that sends nothing while the operator should drive (LeRobot #2346)."""
    now = [0.0]
    dev = KeyboardDevice(KeyboardConfig(), stream=0, clock=lambda: now[0])
    wd = ZeroWatchdog(1.0, dev.name, clock=lambda: now[0])
    msgs = []
    with pytest.warns(ZeroReportWarning):
        for k in range(30):  # 3 s at 10 Hz with no keys
            now[0] = k * 0.1
            m = wd.update(dev.read().active, driving=True)
            if m:
                msgs.append(m)
    assert len(msgs) == 1 and "keyboard" in msgs[0]


def test_command_defaults():
    c = Command(motion=np.zeros(6, np.float32))
    assert c.grip == 1.0 and c.events == () and not c.active
