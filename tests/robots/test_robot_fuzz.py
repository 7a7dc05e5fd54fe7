"""Fuzz the robot server: random and mutated frames, with and without the token, at a real server
subprocess on 127.0.0.1, while a normal client keeps stepping the robot.

Every fuzz message must be answered (an ``error`` reply, or a normal reply for a well-formed
request) or dropped; the server must never exit and must serve the normal client throughout.
The default run is short; ``-m slow`` runs a long one. ``python tests/robots/test_robot_fuzz.py
--messages N`` prints the figures as JSON (BENCHMARKS.md, "Reliability").
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import Any, Iterator

import numpy as np
import pytest
import zmq

from roborl.robots.client import make_robot_env
from roborl.robots.launch import ServerProcess
from roborl.robots.transport import decode, encode

TOKEN = "s3cret"
TASK = "roborl/Reach-v0"
# The fuzzer may not take control of the robot away from the normal client: with the token it
# is a trusted peer, so it never sends the two control-taking types (reset, estop).
SAFE_TYPES = ("ping", "hello", "step", "observe", "stats")
SHAPES: list[Any] = [[2 ** 32, 2 ** 32], [2 ** 70], [-1], [0, 2 ** 40], [1.5], ["3"], [True], [[2]], [1, 1, 1, 1, 1],
                     [2 ** 63], [4], [], None, "4", 7, [2 ** 31, 2 ** 31, 2 ** 31], [0]]
DTYPES: list[Any] = ["<f4", "<f8", "|u1", "|O", "<U4", ">f4", "V8", 3, None, "<c16", "|b1", "<i8", "f4" * 30]
WEIRD: list[Any] = [None, True, -1, 0, 2 ** 64, 10 ** 30, -(10 ** 30), 1.5, 1e308, "", "x" * 100, "\ud800", [], {},
                    [[[[]]]], {"a": {"b": {"c": 1}}}, "reset", "estop", "__class__", list(range(50))]


def _header(rng: np.random.Generator, token: str | None) -> dict[str, Any]:
    h: dict[str, Any] = {"v": 1, "type": str(rng.choice(SAFE_TYPES)), "seq": int(rng.integers(1, 1000)),
                         "session": secrets.token_hex(8)}
    if token is not None:
        h["token"] = token
    return h


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = int(rng.integers(0, 3))
    out = {}
    for i in range(k):
        name = "action" if i == 0 else f"a{i}"
        shape = tuple(int(s) for s in rng.integers(0, 5, size=int(rng.integers(0, 3))))
        dt = [np.float32, np.float64, np.uint8, np.int64][int(rng.integers(0, 4))]
        if dt in (np.float32, np.float64):
            out[name] = (rng.standard_normal(shape) * 10.0 ** int(rng.integers(0, 30))).astype(dt)
        else:
            out[name] = rng.integers(0, 255, size=shape).astype(dt)
    return out


def _raw_frames(h: dict[str, Any], arrays: list[tuple[dict[str, Any], bytes]]) -> list[bytes]:
    h = dict(h, arrays=[spec for spec, _ in arrays])
    return [json.dumps(h, separators=(",", ":")).encode("utf-8", "surrogatepass")] + [p for _, p in arrays]


def fuzz_frames(rng: np.random.Generator, token: str | None) -> list[bytes]:
    """One random or mutated message; ``token`` is put in the header when not None."""
    kind = int(rng.integers(0, 8))
    h = _header(rng, token)
    if kind == 0:  # random bytes
        return [rng.bytes(int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 4)))]
    if kind == 1:  # a valid message with flipped / inserted / deleted header bytes
        frames = encode(h, _arrays(rng))
        b = bytearray(frames[0])
        for _ in range(int(rng.integers(1, 6))):
            op, i = int(rng.integers(0, 3)), int(rng.integers(0, len(b)))
            if op == 0:
                b[i] = int(rng.integers(0, 256))
            elif op == 1:
                b.insert(i, int(rng.choice(list(b'[]{}",:\\0123456789-eE.'))))
            elif len(b) > 1:
                del b[i]
        return [bytes(b)] + frames[1:]
    if kind == 2:  # one header field replaced by a weird value
        frames = encode(h, _arrays(rng))
        hh = json.loads(frames[0])
        key = str(rng.choice(["v", "type", "seq", "session", "arrays", "token", "seed", "extra"]))
        hh[key] = WEIRD[int(rng.integers(0, len(WEIRD)))]
        if key == "type" and token is not None and hh[key] in ("reset", "estop"):
            hh[key] = "ping"
        return [json.dumps(hh, separators=(",", ":")).encode("utf-8", "surrogatepass")] + frames[1:]
    if kind == 3:  # hostile array specs (huge / negative / non-int shapes, bad dtypes, short payloads)
        spec = {"name": str(rng.choice(["action", "", "x" * 100, "obs"])),
                "dtype": DTYPES[int(rng.integers(0, len(DTYPES)))], "shape": SHAPES[int(rng.integers(0, len(SHAPES)))]}
        payload = rng.bytes(int(rng.choice([0, 1, 4, 16, 100])))
        specs = [(spec, payload)] * int(rng.integers(1, 3))
        return _raw_frames(h, specs)
    if kind == 4:  # deep nesting (under the 64 KB header limit)
        depth = int(rng.integers(60, 32_000))
        opener, closer = (b"[", b"]") if rng.random() < 0.5 else (b'{"a":', b"}")
        inner = opener * depth + b"1" + closer * depth
        if rng.random() < 0.5:  # hidden inside a valid-looking header
            head = json.dumps(h, separators=(",", ":")).encode()
            inner = head[:-1] + b',"x":' + inner + b"}"
        return [inner[:64 * 1024]]
    if kind == 5:  # array count mismatch / extra frames
        frames = encode(h, _arrays(rng))
        return frames + [rng.bytes(int(rng.integers(0, 64)))] * int(rng.integers(1, 40))
    if kind == 6:  # oversized header
        return [b'{"v":1,"pad":"' + b"x" * (64 * 1024 + int(rng.integers(0, 100))) + b'"}']
    # kind 7: well-formed request of a safe type (a normal reply or a refusal)
    return encode(h, _arrays(rng) if h["type"] == "step" else None)


def run_fuzz(port: int, env: Any, n: int, seed: int, seconds: float, every: int = 25) -> dict[str, Any]:
    """Send up to ``n`` fuzz messages (stopping after ``seconds``); every ``every`` messages the normal
    client ``env`` steps the robot and must get a valid reply. Returns the figures."""
    rng = np.random.default_rng(seed)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    sent = answered = dropped = ok_replies = client_steps = 0
    codes: dict[str, int] = {}
    unauth_ok = 0  # replies other than 'error' to messages without the token (must stay 0)
    t0 = time.monotonic()
    env.reset(seed=seed)
    act_shape = env.action_space.shape
    try:
        while sent < n and time.monotonic() - t0 < seconds:
            with_token = rng.random() < 0.5
            frames = fuzz_frames(rng, TOKEN if with_token else None)
            sock.send_multipart(frames)
            sent += 1
            if sock.poll(500):  # a well-formed duplicate of an old seq is answered by silence
                reply = sock.recv_multipart()
                while reply and reply[0] == b"":  # the server echoes a REQ-style empty delimiter
                    reply = reply[1:]
                h = decode(reply).header
                answered += 1
                if h["type"] == "error":
                    codes[h["code"]] = codes.get(h["code"], 0) + 1
                else:
                    ok_replies += 1
                    unauth_ok += not with_token
            else:
                dropped += 1
            if sent % every == 0:
                a = rng.uniform(-1, 1, act_shape).astype(np.float32)
                _, _, term, trunc, info = env.step(a)
                assert "tick" in info
                client_steps += 1
                if term or trunc:
                    env.reset(seed=sent)
    finally:
        sock.close(0)
    return {"messages_sent": sent, "answered": answered, "dropped": dropped, "ok_replies": ok_replies,
            "error_codes": dict(sorted(codes.items())), "client_steps": client_steps,
            "unauthenticated_non_error": unauth_ok, "seconds": round(time.monotonic() - t0, 2)}


def _fuzz_server(n: int, seed: int, seconds: float) -> dict[str, Any]:
    with ServerProcess(f"sim:{TASK}", hz=100, token=TOKEN) as srv:
        env = make_robot_env(srv.url + f"?token={TOKEN}", timeout_s=5.0)
        try:
            res = run_fuzz(srv.port, env, n, seed, seconds)
        except Exception as e:  # noqa: BLE001 - report it with the server's side of the story
            res = {"client_error": f"{type(e).__name__}: {e}"}
        try:
            stats = env.stats()
        except Exception as e:  # noqa: BLE001
            stats = {"uptime_s": None, "counts": {}, "error": str(e)}
        finally:
            env.close()
        alive = srv.proc is not None and srv.proc.poll() is None
    res.update(server_alive=alive, server_uptime_s=stats["uptime_s"], server_counts=stats["counts"],
               server_exit_code=srv.proc.returncode if srv.proc else None,
               server_stderr_tail=srv.stderr.strip().splitlines()[-5:])
    return res


def _check(res: dict[str, Any]) -> None:
    assert "client_error" not in res, res
    assert res["server_alive"], res
    assert res["server_exit_code"] == 0, res  # stopped by SIGTERM, cleanly
    assert res["answered"] + res["dropped"] == res["messages_sent"]
    assert res["answered"] >= 0.95 * res["messages_sent"], res
    assert res["unauthenticated_non_error"] == 0, res
    assert res["client_steps"] >= res["messages_sent"] // 25 - 1
    assert res["server_counts"].get("internal_errors", 0) == 0, res  # every bad input has its own check
    assert res["server_counts"]["refused_unauthorized"] > 0 and res["server_counts"]["refused_malformed"] > 0


def test_fuzzed_server_keeps_serving():
    res = _fuzz_server(n=2000, seed=0, seconds=5.0)  # a few seconds; -m slow runs 50,000
    assert res["messages_sent"] >= 300, res
    _check(res)


@pytest.mark.slow
def test_fuzzed_server_keeps_serving_long():
    res = _fuzz_server(n=50_000, seed=1, seconds=600.0)
    _check(res)


def test_fuzz_generator_covers_the_crash_inputs():
    """The three inputs that used to crash the server are among what the generator sends."""
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(3000):
        fr = fuzz_frames(rng, None)
        try:
            h = json.loads(fr[0]) if len(fr[0]) < 64 * 1024 else None
        except (ValueError, RecursionError):
            if fr[0].startswith(b"[" * 60) or b"[" * 60 in fr[0] or b'{"a":' * 60 in fr[0]:
                seen.add("deep")
            continue
        if isinstance(h, dict) and isinstance(h.get("arrays"), list):
            for spec in h["arrays"]:
                if isinstance(spec, dict) and spec.get("shape") in ([2 ** 32, 2 ** 32], [2 ** 70]):
                    seen.add(str(spec["shape"]))
    assert seen >= {"deep", str([2 ** 32, 2 ** 32]), str([2 ** 70])}


def test_the_three_crash_inputs_get_one_line_refusals():
    """Without the token: huge shape with an empty payload, a 2**70 shape, a 32,000-deep header."""
    cases = {
        "2^32 x 2^32": [json.dumps({"v": 1, "type": "step", "seq": 1, "arrays": [
            {"name": "a", "dtype": "<f4", "shape": [2 ** 32, 2 ** 32]}]}).encode(), b""],
        "2^70": [json.dumps({"v": 1, "type": "step", "seq": 1, "arrays": [
            {"name": "a", "dtype": "<f4", "shape": [2 ** 70]}]}).encode(), b""],
        "deep": [b"[" * 32_000 + b"]" * 32_000],
    }
    with ServerProcess(f"sim:{TASK}", hz=50, token=TOKEN) as srv:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{srv.port}")
        try:
            codes = {}
            for name, frames in cases.items():
                sock.send_multipart(frames)
                assert sock.poll(5000), name
                h = decode(sock.recv_multipart()).header
                assert h["type"] == "error" and "\n" not in h["error"], name
                codes[name] = h["code"]
            # The token is checked before the arrays: these never reach the shape check.
            assert codes == {"2^32 x 2^32": "unauthorized", "2^70": "unauthorized", "deep": "malformed"}
            # With the token the shapes are refused by the overflow-safe size check.
            for shape in ([2 ** 32, 2 ** 32], [2 ** 70]):
                sock.send_multipart([json.dumps({"v": 1, "type": "step", "seq": 1, "token": TOKEN, "arrays": [
                    {"name": "a", "dtype": "<f4", "shape": shape}]}).encode(), b""])
                assert sock.poll(5000)
                h = decode(sock.recv_multipart()).header
                assert h["code"] == "malformed" and "shape" in h["error"], h
        finally:
            sock.close(0)
        env = make_robot_env(srv.url + f"?token={TOKEN}")
        try:
            env.reset(seed=0)
            env.step(np.zeros(env.action_space.shape, np.float32))
        finally:
            env.close()
        assert srv.proc.poll() is None
    assert srv.proc.returncode == 0


def main() -> None:
    p = argparse.ArgumentParser(description="Fuzz a real robot server subprocess; prints JSON figures.")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    res = _fuzz_server(a.messages, a.seed, a.seconds)
    print(json.dumps(res, indent=1))
    _check(res)


if __name__ == "__main__":
    sys.exit(main())
