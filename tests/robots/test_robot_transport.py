"""The wire decoder on hostile input (in process; the server-level tests are in test_robot_fuzz.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from roborl.robots.transport import (MAX_JSON_DEPTH, MessageError, Unauthorized, check_token, decode, encode,
                                     json_depth, json_depth_fast, too_deep)


def test_fast_depth_scan_equals_the_plain_one():
    rng = np.random.default_rng(0)
    alphabet = list(b'[]{}"\\,:a1 ')
    for _ in range(3000):
        raw = bytes(rng.choice(alphabet, size=int(rng.integers(0, 200))).tolist())
        assert json_depth_fast(raw) == json_depth(raw), raw
        assert too_deep(raw, 3) == (json_depth(raw) > 3), raw
    for obj in ({"a": [1, {"b": "[[[{{{"}]}, [[[[["\\"]]]]], "x", {"k": ['"]]]', {"z": []}]}):
        raw = json.dumps(obj).encode()
        assert json_depth(raw) == json_depth_fast(raw)
    assert json_depth(json.dumps({"a": [1, {"b": "[[[{{{"}]}).encode()) == 3


def test_deep_header_is_refused_before_json_recursion():
    with pytest.raises(MessageError, match="nested deeper"):
        decode([b"[" * 32_000 + b"]" * 32_000])
    with pytest.raises(MessageError, match="nested deeper"):
        decode([b'{"v":1,"x":' + b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 2)])
    ok = encode({"type": "ping", "seq": 1, "nested": [[[[1]]]]})
    assert decode(ok).header["nested"] == [[[[1]]]]


@pytest.mark.parametrize("shape, payload", [([2 ** 32, 2 ** 32], b""), ([2 ** 70], b""), ([0, 2 ** 40], b""),
                                            ([2 ** 20, 2 ** 20, 2 ** 20, 2 ** 20], b""), ([-1], b""),
                                            ([1.0], b"\x00" * 4), ([True], b"\x00" * 4), ([1] * 5, b"\x00" * 4),
                                            ([3], b"\x00" * 4)])
def test_hostile_shapes_are_refused_without_overflow(shape, payload):
    frames = [json.dumps({"v": 1, "type": "step", "seq": 1, "arrays": [
        {"name": "a", "dtype": "<f4", "shape": shape}]}).encode(), payload]
    with pytest.raises(MessageError):
        decode(frames)


@pytest.mark.parametrize("header", [
    b'{"v":1,"type":"ping","seq":' + b"9" * 5000 + b"}",  # past Python's int digit limit (a ValueError)
    b'{"v":1,"type":"ping","seq":NaN}', b'{"v":1,"type":"ping","seq":1e999}', b'{"v":1,"type":"ping","seq":1,"x":-Infinity}',
    b'{"v":1,"type":"ping","seq":18446744073709551616}', b'{"v":1,"type":"' + b"p" * 100 + b'","seq":1}',
    b'\xff\xfe', b'"just a string"', b'{"v":1,"type":"ping","seq":1,"arrays":[{"name":"a","dtype":["<f4"],"shape":[1]}]}',
])
def test_hostile_headers_are_one_line_errors(header):
    frames = [header] + ([b"\x00" * 4] if b"arrays" in header else [])
    with pytest.raises(MessageError) as ei:
        decode(frames)
    assert "\n" not in str(ei.value) and len(str(ei.value)) < 300


def test_token_is_checked_before_the_arrays():
    bad_arrays = [json.dumps({"v": 1, "type": "step", "seq": 1, "token": "nope", "arrays": [
        {"name": "a", "dtype": "<f4", "shape": [2 ** 70]}]}).encode(), b""]
    with pytest.raises(Unauthorized):
        decode(bad_arrays, token="s3cret")
    with pytest.raises(MessageError, match="shape"):
        decode(bad_arrays)  # without a token requirement the shape check refuses it
    good = encode({"type": "step", "seq": 1, "token": "s3cret"}, {"a": np.arange(3, dtype=np.float32)})
    assert decode(good, token="s3cret").arrays["a"].tolist() == [0.0, 1.0, 2.0]
    # A lone surrogate in the token is a wrong token, not an exception.
    assert check_token(json.loads('{"token": "\\ud800"}'), "s3cret") is False


# ----------------------------------------------------------------------------- Dict observations

def _arm_space(h: int = 16):
    from gymnasium import spaces

    img = spaces.Box(0, 255, (h, h, 3), np.uint8)
    return spaces.Dict({"proprio": spaces.Box(-np.inf, np.inf, (7,), np.float32),
                        "pixels": spaces.Dict({"front": img, "wrist": img})})


def test_dict_observation_and_space_round_trip_through_the_frames():
    from roborl.robots.transport import obs_from_arrays, obs_to_arrays, space_from_json, space_to_json

    space = _arm_space(64)
    wire = json.dumps(space_to_json(space)).encode()
    assert len(wire) < 1000  # uniform image bounds travel as one number, not 12,288
    back = space_from_json(json.loads(wire))
    assert back == space
    obs = space.sample()
    arrays = obs_to_arrays(obs, space)
    assert set(arrays) == {"obs/proprio", "obs/pixels/front", "obs/pixels/wrist"}
    assert arrays["obs/pixels/front"].dtype == np.uint8  # images travel as bytes, not float32
    msg = decode(encode({"type": "step", "seq": 1}, arrays))
    got = obs_from_arrays(msg.arrays, back)
    assert back.contains(got)
    np.testing.assert_array_equal(got["pixels"]["wrist"], obs["pixels"]["wrist"])
    np.testing.assert_array_equal(got["proprio"], obs["proprio"])
    got["pixels"]["front"][0, 0, 0] = 1  # writable, unlike the frame's own buffer


@pytest.mark.parametrize("case", ["missing", "extra", "dtype", "shape"])
def test_dict_observation_with_a_wrong_leaf_is_refused(case: str):
    from roborl.robots.transport import obs_from_arrays, obs_to_arrays

    space = _arm_space()
    arrays = obs_to_arrays(space.sample(), space)
    if case == "missing":
        del arrays["obs/pixels/wrist"]
    elif case == "extra":
        arrays["obs/environment_state"] = np.zeros(6, np.float32)
    elif case == "dtype":
        arrays["obs/pixels/front"] = arrays["obs/pixels/front"].astype(np.float32)
    else:
        arrays["obs/proprio"] = np.zeros(8, np.float32)
    msg = decode(encode({"type": "step", "seq": 1}, arrays))
    with pytest.raises(MessageError) as e:
        obs_from_arrays(msg.arrays, space)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [
    {"type": "dict", "spaces": {}},
    {"type": "dict", "spaces": {"a/b": {"shape": [1], "low": 0, "high": 1}}},
    {"shape": [2 ** 40], "low": 0, "high": 1, "dtype": "uint8"},
    {"shape": [8192, 8192, 3], "low": 0, "high": 255, "dtype": "uint8"},  # the client would build 1.6 GB of bounds
    {"shape": [3], "low": [0, 0], "high": 1},
    {"shape": [2], "low": 0, "high": 1, "dtype": "object"},
    {"shape": [2], "low": None, "high": None, "dtype": "uint8"},
    {"shape": [1, 1, 1, 1, 1], "low": 0, "high": 1},
    "box",
])
def test_malformed_space_descriptions_are_refused(bad):
    from roborl.robots.transport import space_from_json

    deep: dict = {"shape": [1], "low": 0, "high": 1}
    for _ in range(10):
        deep = {"type": "dict", "spaces": {"k": deep}}
    for d in (bad, deep):
        with pytest.raises(MessageError):
            space_from_json(d)
