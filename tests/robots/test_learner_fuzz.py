"""Hostile frames against a real `roborl train ... --role learner` process: every one gets an error
reply (the token is checked before any array is read; anything else that goes wrong while handling
one message becomes an error reply) and the learner keeps serving."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from roborl.robots.launch import free_port
from roborl.robots.transport import Channel, RemoteError, decode, encode

CFG = """
env: {id: roborl/Reach-v0}
train: {algo: sac, total_steps: 100000, eval_every: 0, checkpoint_every: 100000, log_every: 1000}
store: {online_capacity: 10000, sampler: {kind: uniform, demo_fraction: 0.0}}
sac: {hidden: [16, 16], batch_size: 16, warmup_steps: 100}
"""
TOKEN = "fuzz-secret"


def _hostile() -> list[tuple[str, list[bytes]]]:
    """(what, frames): unauthenticated messages a stranger on the network could send."""
    head = {"v": 1, "type": "push", "seq": 1, "session": "x", "actor_id": "a", "first_seq": 0}
    huge = dict(head, arrays=[{"name": "reward", "dtype": "<f8", "shape": [2 ** 28, 2 ** 28, 2 ** 28, 2 ** 28]}])
    neg = dict(head, arrays=[{"name": "obs", "dtype": "<f4", "shape": [-1, 4]}])
    return [
        ("huge shape, no token", [json.dumps(huge).encode(), b"\0" * 16]),
        ("negative shape, no token", [json.dumps(neg).encode(), b"\0" * 16]),
        ("huge shape, wrong token", [json.dumps(dict(huge, token="guess")).encode(), b"\0" * 16]),
        ("deep JSON", [b'{"v":1,"type":"push","seq":1,"x":' + b"[" * 30000 + b"]" * 30000 + b"}"]),
        ("deep JSON in a string-free flood", [b"[" * 60000]),
        ("oversized header", [b"{" + b" " * (200 * 1024) + b"}"]),
        ("not JSON", [b"\xff\xfe\x00garbage"]),
        ("JSON array header", [b"[1,2,3]"]),
        ("empty header", [b""]),
        ("NaN constant", [b'{"v":1,"type":"ping","seq":NaN}']),
        ("bad dtype", [json.dumps(dict(head, arrays=[{"name": "o", "dtype": "O", "shape": [1]}])).encode(), b"x"]),
        ("frame count mismatch", [json.dumps(dict(head, arrays=[])).encode(), b"abc", b"def"]),
    ]


def _raw_call(sock: zmq.Socket, frames: list[bytes], timeout_ms: int = 10_000) -> dict:
    sock.send_multipart(frames)
    assert sock.poll(timeout_ms, zmq.POLLIN), "no reply: the learner stopped serving"
    reply = sock.recv_multipart()
    # A lone empty frame reads as a REQ envelope on the ROUTER side, so its reply echoes one back.
    return decode(reply[1:] if len(reply) > 1 and reply[0] == b"" else reply).header


def test_learner_answers_hostile_frames_and_keeps_serving(tmp_path: Path) -> None:
    import gymnasium as gym

    import roborl  # noqa: F401

    if "roborl/Reach-v0" not in gym.registry:
        pytest.skip("roborl/Reach-v0 not available")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "roborl.cli", "train", str(cfg), f"run.dir={tmp_path / 'run'}",
                             "--role", "learner", "--learner", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1", ROBORL_ROBOT_TOKEN=TOKEN))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        with Channel("127.0.0.1", port, token=TOKEN, timeout_s=120.0, name="learner") as ch:
            assert ch.call("ping").type == "pong"  # up (waits out the learner's start-up)
        sock.connect(f"tcp://127.0.0.1:{port}")
        codes = {}
        for what, frames in _hostile():
            h = _raw_call(sock, frames)
            assert h["type"] == "error", what
            codes[what] = h["code"]
            with Channel("127.0.0.1", port, token=TOKEN, timeout_s=10.0, name="learner") as ch:
                assert ch.call("ping").type == "pong", f"learner stopped serving after: {what}"
        # Unauthenticated arrays never reach the array decoder: refused as unauthorized, not malformed.
        assert codes["huge shape, no token"] == codes["huge shape, wrong token"] == "unauthorized"
        assert codes["deep JSON"] == codes["oversized header"] == codes["not JSON"] == "malformed"
        # An authenticated push without its arrays fails inside the handler: an error reply, still serving.
        with Channel("127.0.0.1", port, token=TOKEN, timeout_s=10.0, name="learner") as ch:
            with pytest.raises(RemoteError):
                ch.call("push", {"actor_id": "fuzz", "first_seq": 0}, arrays={"junk": np.zeros(3, np.float32)})
            assert ch.call("ping").type == "pong"
        assert proc.poll() is None
    finally:
        sock.close(0)
        proc.kill()
        proc.wait(timeout=30)
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err[-2000:]
