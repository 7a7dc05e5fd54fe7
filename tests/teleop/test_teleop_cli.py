"""`roborl teleop` as a real subprocess: scripted collection, kill -9 mid-run, resume; device errors exit 2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from roborl.store.store import EP_INTERRUPTED, EP_TERMINATED, EP_TRUNCATED, ReplayStore


def teleop(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roborl.cli", "teleop", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, **kw)


def demo_episodes(path) -> np.ndarray:
    """Open as a writer: that runs crash recovery (WAL replay), as the resumed command does."""
    st = ReplayStore.open(path, mode="a")
    try:
        return st.episodes("demo")
    finally:
        st.close()


def test_resume_after_sigkill(tmp_path):
    store = tmp_path / "demos"
    args = ["--env", "roborl/Reach-v0", "--device", "scripted", "--store", str(store), "--hz", "100"]
    proc = subprocess.Popen([sys.executable, "-m", "roborl.cli", "teleop", *args, "--episodes", "1000"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The status lines (stderr is not a TTY: one line each) say when episodes are kept;
        # they sit in the store's write-ahead log, not yet in a zarr commit.
        kept = 0
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith("kept "):
                kept = int(line.split()[1].rstrip(","))
                if kept >= 3:
                    break
        assert kept >= 3, "collection exited early"
        time.sleep(0.2)  # most likely mid-episode now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    eps = demo_episodes(store)
    k = len(eps)
    assert k >= 3  # every kept episode survived kill -9 (replayed from the WAL)
    # only kept, complete episodes: every one ends in a terminal or time-limit step, none interrupted
    assert np.all(eps[:, 2] & (EP_TERMINATED | EP_TRUNCATED)) and not np.any(eps[:, 2] & EP_INTERRUPTED)
    p = teleop(*args, "--episodes", str(k + 2), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["already"] >= k and out["kept"] == k + 2 - out["already"] and out["total"] == k + 2
    assert "resuming" in p.stderr
    eps2 = demo_episodes(store)
    assert len(eps2) == k + 2 and not np.any(eps2[:, 2] & EP_INTERRUPTED)
    # nothing to do when the store already holds enough
    p = teleop(*args, "--episodes", str(k), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["kept"] == 0


def test_absent_spacemouse_exits_2_with_listing(tmp_path):
    p = teleop("--env", "roborl/Reach-v0", "--device", "spacemouse", "--store", str(tmp_path / "s"), "--episodes", "1")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert p.stderr.startswith("roborl: error: device 'spacemouse'") and "found" in p.stderr
    assert not (tmp_path / "s").exists()  # no store is created for a session that cannot start


def test_absent_devices_exit_2_in_process(tmp_path, monkeypatch, capsys):
    from roborl.cli import main

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    cases = [("keyboard", "TTY"), ("joystik", "known: keyboard, gamepad")]
    try:
        import pygame  # noqa: F401
        cases.append(("gamepad", "found: none"))
    except ImportError:
        cases.append(("gamepad", "not installed"))
    for device, needle in cases:
        rc = main(["teleop", "--env", "roborl/Reach-v0", "--device", device, "--store", str(tmp_path / device),
                   "--episodes", "1"])
        err = capsys.readouterr().err
        assert rc == 2, (device, err)
        assert err.startswith("roborl: error:") and device in err and needle in err, err
        assert not (tmp_path / device).exists()
