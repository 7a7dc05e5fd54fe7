"""ZeroMQ transport shared by the robot server/client and the actor/learner split.

Wire format (one ZeroMQ multipart message)::

    frame 0   UTF-8 JSON header, a mapping:
              {"v": 1, "type": str, "seq": int >= 0, "session": str,
               "token": str (only when the server requires one),
               "arrays": [{"name": str, "dtype": "<f4", "shape": [int, ...]}, ...],
               ... message fields (JSON scalars/lists/dicts) ...}
    frame 1+  raw little-endian array bytes, one frame per entry of "arrays", in order

Everything is validated on receipt (:func:`decode`, or :func:`decode_header` then
:func:`decode_arrays`): header size (64 KB) and JSON nesting depth (bounded by a bracket scan
before ``json.loads`` can recurse), required keys and their types, dtype allow-list, shape rank
and each dimension, and ``prod(shape) * itemsize == len(payload)`` in Python integers (no
int64 overflow, nothing reshaped before it matches); a violation raises :class:`MessageError`
with one line, which the receiver turns into an ``error`` reply and keeps serving. A receiver
that requires a token checks it between the two (``decode(frames, token=...)``), so an
unauthenticated peer never reaches the array decoder. No pickle, no msgpack: nothing on the
wire can execute code.

:class:`Channel` is the client side. It follows the ZeroMQ guide's "lazy pirate"
pattern with a DEALER socket: every call has a deadline; an attempt that gets no reply
within ``attempt_timeout_s`` closes the socket (``linger=0`` drops anything queued for
a dead peer, so a stale command can never be delivered later), waits an exponentially
growing backoff and resends the *same* ``(session, seq)``; the server answers a repeated
``seq`` from its reply cache instead of executing it twice. ``IMMEDIATE`` makes sends to a
peer that is not connected fail at once instead of queueing. When the deadline passes the
call raises :class:`PeerUnavailable` (one line). This is what LeRobot #3979 (no gRPC
deadline; the actor hangs when the learner restarts) and serl #66 lacked.
"""
from __future__ import annotations

import hmac
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import zmq

from roborl.errors import UsageError

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 32
MAX_NDIM = 4
#: largest single dimension (no valid array has more elements than bytes in a message).
MAX_DIM = 256 * 1024 * 1024
#: deepest JSON nesting accepted in a header (ours nest <= ~8 levels).
MAX_JSON_DEPTH = 64
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # also set as zmq.MAXMSGSIZE on receiving sockets
#: dtypes allowed on the wire (little-endian numpy ``dtype.str``).
DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "|u1", "|b1", "<u4", "<u8"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_ENV = "ROBORL_ROBOT_TOKEN"
# A JSON string literal (escapes included): removed before counting brackets.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class MessageError(ValueError):
    """A malformed message (one line). The receiver answers with an ``error`` reply and keeps serving."""


class PeerUnavailable(UsageError, ConnectionError):
    """The peer did not answer within the call's deadline (one line; the CLI prints it and exits 2)."""


class RemoteError(UsageError):
    """The peer answered with an ``error`` reply (refused, malformed, unauthorized, ...)."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    """A decoded message: the JSON header and the named arrays (read-only views of the frames)."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.header["type"]

    @property
    def seq(self) -> int:
        return self.header["seq"]


# ----------------------------------------------------------------------------- framing

def encode(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> list[bytes]:
    """Header dict + named arrays -> frames. Arrays are made C-contiguous little-endian."""
    h = dict(header)
    h.setdefault("v", PROTOCOL_VERSION)
    frames: list[bytes] = []
    specs = []
    for name, arr in (arrays or {}).items():
        a = np.asarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        a = np.ascontiguousarray(a)
        if a.dtype.str not in DTYPES:
            raise MessageError(f"array {name!r}: dtype {a.dtype.str} is not sendable (allowed: {sorted(DTYPES)})")
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        frames.append(a.tobytes())
    h["arrays"] = specs
    return [json.dumps(h, separators=(",", ":"), allow_nan=False).encode()] + frames


class Unauthorized(MessageError):
    """A message without the right token (checked before any array is decoded)."""


def json_depth(raw: bytes) -> int:
    """Deepest ``[``/``{`` nesting of the JSON text ``raw``, ignoring brackets inside strings (plain scan).

    Strings are removed first (an unterminated one leaves its brackets counted: such text is
    not JSON anyway). Depth is the running sum of +1 per opener, -1 per closer.
    """
    body = _JSON_STRING.sub(b"", bytes(raw))
    depth = best = 0
    for c in body:
        if c == 0x5B or c == 0x7B:      # [ {
            depth += 1
            if depth > best:
                best = depth
        elif c == 0x5D or c == 0x7D:    # ] }
            depth -= 1
    return best


def json_depth_fast(raw: bytes) -> int:
    """:func:`json_depth` vectorised (same string removal, then max of the cumulative +1/-1 sum)."""
    body = np.frombuffer(_JSON_STRING.sub(b"", bytes(raw)), dtype=np.uint8)
    if body.size == 0:
        return 0
    step = ((body == 0x5B) | (body == 0x7B)).astype(np.int32) - ((body == 0x5D) | (body == 0x7D))
    return max(0, int(np.cumsum(step).max()))


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """``json_depth(raw) > limit``. Nesting never exceeds the number of openers, so a header with
    at most ``limit`` of them (every normal header) skips the scan; otherwise the vectorised scan
    (a Python loop over 64 KB would stall the control loop for milliseconds per message)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return json_depth_fast(raw) > limit


def _no_constant(name: str) -> Any:
    raise MessageError(f"header contains {name}: not JSON")


def decode_header(frames: list[bytes]) -> dict[str, Any]:
    """Frame 0 -> the validated header (nothing of the array frames is touched); raises :class:`MessageError`.

    The JSON nesting depth is bounded before ``json.loads`` runs: the C decoder recurses once
    per level and a 32,000-deep header (well under 64 KB) would raise ``RecursionError``.
    """
    if not frames:
        raise MessageError("empty message")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise MessageError(f"header is {len(raw)} bytes (max {MAX_HEADER_BYTES})")
    if too_deep(raw):
        raise MessageError(f"header JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=_no_constant)
    except MessageError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise MessageError(f"header is not UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise MessageError(f"header must be a JSON object, got {type(header).__name__}")
    if header.get("v") != PROTOCOL_VERSION:
        raise MessageError(f"header 'v' is {_short(header.get('v'))}; this peer speaks protocol {PROTOCOL_VERSION}")
    if not isinstance(header.get("type"), str) or not header["type"] or len(header["type"]) > 64:
        raise MessageError("header 'type' must be a non-empty string of at most 64 characters")
    seq = header.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2 ** 63:
        raise MessageError("header 'seq' must be an integer in [0, 2**63)")
    sess = header.get("session", "")
    if not isinstance(sess, str) or len(sess) > 64:
        raise MessageError("header 'session' must be a string of at most 64 characters")
    return header


def array_nbytes(shape: Any, dtype: np.dtype) -> int:
    """Bytes of an array of ``shape``: ``prod(shape) * itemsize`` in Python ints (cannot overflow).

    ``shape`` must already be a list of at most MAX_NDIM ints in [0, MAX_DIM].
    """
    return math.prod(shape) * dtype.itemsize


def _check_shape(name: str, shape: Any) -> list[int]:
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(s) is int and 0 <= s <= MAX_DIM for s in shape)):
        raise MessageError(f"array {name!r}: shape must be a list of at most {MAX_NDIM} integers in "
                           f"[0, {MAX_DIM}]")
    return shape


def decode_arrays(header: Mapping[str, Any], frames: list[bytes]) -> dict[str, np.ndarray]:
    """The array frames of a message whose header passed :func:`decode_header`; raises :class:`MessageError`.

    Every spec is checked before anything is built: name, dtype in :data:`DTYPES`, shape
    (at most MAX_NDIM dims, each in [0, MAX_DIM]) and ``prod(shape) * itemsize == len(payload)``
    in Python integers, so no shape can overflow numpy's int64 or reach ``reshape`` unchecked.
    """
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise MessageError(f"header 'arrays' must be a list of at most {MAX_ARRAYS} entries")
    if len(specs) != len(frames) - 1:
        raise MessageError(f"header declares {len(specs)} arrays but {len(frames) - 1} payload frames came")
    arrays: dict[str, np.ndarray] = {}
    for spec, payload in zip(specs, frames[1:]):
        if not isinstance(spec, dict):
            raise MessageError("each 'arrays' entry must be an object")
        name, dt, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if not isinstance(name, str) or not name or len(name) > 64 or name in arrays:
            raise MessageError(f"array name {_short(name)} is missing, too long or repeated")
        if not isinstance(dt, str) or dt not in DTYPES:
            raise MessageError(f"array {name!r}: dtype {_short(dt)} not allowed (allowed: {sorted(DTYPES)})")
        shape = _check_shape(name, shape)
        dtype = np.dtype(dt)
        need = array_nbytes(shape, dtype)
        if need != len(payload):
            raise MessageError(f"array {name!r}: {len(payload)} bytes, expected {need} for {dt}{shape}")
        arrays[name] = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return arrays


def decode(frames: list[bytes], token: str | None = None) -> Message:
    """Frames -> :class:`Message`, validating everything; raises :class:`MessageError`.

    With ``token``, the header's token is compared (constant time) right after the header
    is parsed and BEFORE any array frame is looked at; a mismatch raises :class:`Unauthorized`.
    """
    header = decode_header(frames)
    if token is not None and not check_token(header, token):
        raise Unauthorized("missing or wrong token")
    return Message(header, decode_arrays(header, frames))


def _short(v: Any, n: int = 40) -> str:
    """repr of a peer-supplied value, cut to ``n`` characters (error messages stay one short line)."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def check_token(header: Mapping[str, Any], token: str | None) -> bool:
    """Constant-time token check; a server without a token accepts everything."""
    if not token:
        return True
    got = header.get("token")
    # surrogatepass: a JSON string may hold a lone surrogate ("\ud800"), which plain encode() rejects.
    return isinstance(got, str) and hmac.compare_digest(got.encode("utf-8", "surrogatepass"), token.encode())


def jsonable(obj: Any, depth: int = 0) -> Any:
    """Best-effort conversion of an env ``info`` to JSON (numpy scalars/small arrays; others dropped)."""
    if depth > 4:
        return None
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), depth + 1) if obj.size <= 64 else None
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            j = jsonable(v, depth + 1)
            if j is not None or v is None:
                out[str(k)] = j
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, depth + 1) for v in obj][:64]
    return None


# ----------------------------------------------------------------------------- observations

#: array-name prefix of a Dict observation's leaves (``obs/proprio``, ``obs/pixels/front``).
OBS_PREFIX = "obs/"
#: deepest Dict nesting of an observation space on the wire.
MAX_SPACE_DEPTH = 4
#: most values in one Box of a space description (a 1024x1024x3 camera is 3.1 M): bounds the
#: float64 arrays a client builds from a hello, whoever sent it.
MAX_SPACE_ELEMENTS = 16 * 1024 * 1024


def _bound(x: np.ndarray) -> Any:
    """A Box bound for JSON: one number when every entry is equal (a 64x64x3 image bound would
    otherwise be 12,288 numbers, past the 64 KB header limit), else the flat list; inf -> null."""
    flat = np.ravel(x).astype(np.float64)
    enc = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731 - JSON has no inf
    if flat.size and np.all(flat == flat[0]):
        return enc(flat[0])
    return [enc(v) for v in flat]


def space_to_json(space: Any) -> dict[str, Any]:
    """A Box, or a (nested) Dict of Boxes -> JSON: ``{"shape", "low", "high", "dtype"}`` for a Box
    (bounds: one number or a flat list, null = unbounded), ``{"type": "dict", "spaces": {key: ...}}``
    for a Dict. Other spaces raise :class:`MessageError`."""
    from gymnasium import spaces as S

    if isinstance(space, S.Dict):
        return {"type": "dict", "spaces": {str(k): space_to_json(v) for k, v in space.spaces.items()}}
    if isinstance(space, S.Box):
        return {"shape": list(space.shape), "low": _bound(space.low), "high": _bound(space.high),
                "dtype": np.dtype(space.dtype).name}
    raise MessageError(f"observation/action space {type(space).__name__} cannot be served (Box or Dict of Box)")


def space_from_json(d: Any, what: str = "space", depth: int = 0) -> Any:
    """Inverse of :func:`space_to_json`, validating everything (dtype allow-list, shape rank and
    size, bound lengths, nesting, key names); raises :class:`MessageError` with one line."""
    from gymnasium import spaces as S

    if not isinstance(d, dict):
        raise MessageError(f"{what}: expected an object")
    if d.get("type") == "dict":
        sub = d.get("spaces")
        if depth >= MAX_SPACE_DEPTH or not isinstance(sub, dict) or not sub or len(sub) > MAX_ARRAYS:
            raise MessageError(f"{what}: a dict space needs 1..{MAX_ARRAYS} entries, nested at most "
                               f"{MAX_SPACE_DEPTH} deep")
        for k in sub:
            if not k or "/" in k or len(k) > 32:
                raise MessageError(f"{what}: key {_short(k)} must be 1..32 characters without '/'")
        return S.Dict({k: space_from_json(v, f"{what}/{k}", depth + 1) for k, v in sub.items()})
    shape, dt = d.get("shape"), d.get("dtype", "float32")
    shape = _check_shape(what, shape)
    if not isinstance(dt, str):
        raise MessageError(f"{what}: dtype must be a string")
    try:
        dtype = np.dtype(dt)
    except TypeError:
        raise MessageError(f"{what}: unknown dtype {_short(dt)}") from None
    if dtype.newbyteorder("<").str not in DTYPES or dtype.kind not in "fiub":
        raise MessageError(f"{what}: dtype {dt} not allowed")
    n = math.prod(shape)
    if n > MAX_SPACE_ELEMENTS:
        raise MessageError(f"{what}: shape {shape} has more than {MAX_SPACE_ELEMENTS} values")

    def bound(v: Any, inf: float) -> np.ndarray:
        if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
            return np.full(shape, inf if v is None else float(v), np.float64)
        if not isinstance(v, list) or len(v) != n or not all(
                x is None or isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise MessageError(f"{what}: bounds must be a number or a list of {n} numbers/nulls")
        return np.array([inf if x is None else x for x in v], np.float64).reshape(shape)

    low, high = bound(d.get("low"), -np.inf), bound(d.get("high"), np.inf)
    if dtype.kind != "f" and not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise MessageError(f"{what}: an integer space needs finite bounds")
    return S.Box(low.astype(dtype), high.astype(dtype), shape=tuple(shape), dtype=dtype)


def obs_to_arrays(obs: Any, space: Any) -> dict[str, np.ndarray]:
    """One observation -> named wire arrays. A Box: ``{"obs": float32 [...]}`` (as always); a Dict:
    one array per leaf, ``"obs/" + leaf name`` (``obs/pixels/front``), in the leaf's own dtype
    (uint8 images stay uint8: 4x fewer bytes than float32)."""
    from gymnasium import spaces as S

    from roborl.envs.spaces import flatten_obs, leaves

    if not isinstance(space, S.Dict):
        return {"obs": np.asarray(obs, np.float32)}
    return {OBS_PREFIX + k: np.asarray(v, dtype=lf.dtype)
            for lf, (k, v) in zip(leaves(space), flatten_obs(obs, space).items())}


def obs_from_arrays(arrays: Mapping[str, np.ndarray], space: Any) -> Any:
    """Inverse of :func:`obs_to_arrays`, checked against ``space``: every leaf present, none extra,
    each of the leaf's exact shape and dtype; raises :class:`MessageError` (one line)."""
    from gymnasium import spaces as S

    from roborl.envs.spaces import leaves, unflatten_obs

    if not isinstance(space, S.Dict):
        if "obs" not in arrays:
            raise MessageError("reply without 'obs'")
        obs = np.array(arrays["obs"], dtype=np.float32)
        if obs.shape != space.shape:
            raise MessageError(f"obs of shape {obs.shape}, expected {space.shape}")
        return obs
    lvs = leaves(space)
    got = {k[len(OBS_PREFIX):] for k in arrays if k.startswith(OBS_PREFIX)}
    want = {lf.name for lf in lvs}
    if got != want:
        raise MessageError(f"observation entries {sorted(got)}, expected {sorted(want)}")
    flat = {}
    for lf in lvs:
        a = arrays[OBS_PREFIX + lf.name]
        if a.shape != lf.shape or a.dtype != lf.dtype:
            raise MessageError(f"observation {lf.name!r}: {a.dtype}{list(a.shape)}, expected {lf.dtype}{list(lf.shape)}")
        flat[lf.name] = np.array(a)  # a writable copy (the frame's view is read-only)
    return unflatten_obs(flat, space)


# ----------------------------------------------------------------------------- addresses

def parse_hostport(addr: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) -> (host, port); one-line UsageError otherwise."""
    host, sep, port_s = addr.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not (0 < int(port_s) < 65536):
        raise UsageError(f"{what} {addr!r} is not HOST:PORT (e.g. 127.0.0.1:5555)")
    return host, int(port_s)


def tcp_endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def resolve_token(token: str | None) -> str | None:
    """An explicit token, else ``$ROBORL_ROBOT_TOKEN`` (keeps it out of the process list), else None."""
    return token if token else (os.environ.get(TOKEN_ENV) or None)


def context() -> zmq.Context:
    return zmq.Context.instance()


def bind_router(host: str, port: int, what: str = "server") -> zmq.Socket:
    """A ROUTER socket bound to host:port with bounded queues and message size."""
    sock = context().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.RCVHWM, 1000)
    if ":" in host:
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.bind(tcp_endpoint(host, port))
    except zmq.ZMQError as e:
        sock.close(0)
        raise UsageError(f"{what}: cannot bind {host}:{port} ({e.strerror})") from None
    return sock


def router_recv(sock: zmq.Socket) -> tuple[list[bytes], list[bytes]]:
    """Receive one message on a ROUTER socket -> (routing envelope, body frames).

    Accepts DEALER peers (``[id, body...]``) and REQ peers (``[id, b"", body...]``); the
    envelope is echoed back by :func:`router_send` so both kinds get their reply.
    """
    frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
    if len(frames) >= 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]


def router_send(sock: zmq.Socket, envelope: list[bytes], frames: list[bytes]) -> bool:
    """Send without ever blocking; a reply to a vanished or slow peer is dropped (returns False)."""
    try:
        sock.send_multipart(envelope + frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False
    except zmq.ZMQError:
        return False


def error_reply(req_header: Mapping[str, Any] | None, code: str, message: str) -> list[bytes]:
    seq = req_header.get("seq", 0) if isinstance(req_header, Mapping) else 0
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else 0
    return encode({"type": "error", "seq": seq, "code": code, "error": message})


# ----------------------------------------------------------------------------- client channel

class Channel:
    """A request/reply client with deadlines, resends and backoff (lazy pirate over DEALER).

    ``call`` never blocks longer than its deadline. Requests carry ``(session, seq)``; a
    resend reuses the seq so that a server which already executed it replies from its cache.
    Not thread-safe (one Channel per thread).
    """

    def __init__(self, host: str, port: int, *, token: str | None = None, timeout_s: float = 2.0,
                 attempt_timeout_s: float = 0.5, name: str = "robot server") -> None:
        self.host, self.port = host, port
        self.endpoint = tcp_endpoint(host, port)
        self.token = token
        self.timeout_s = float(timeout_s)
        self.attempt_timeout_s = float(attempt_timeout_s)
        self.name = name
        self.session = secrets.token_hex(8)
        self.seq = 0
        self.resends = 0
        self._sock: zmq.Socket | None = None

    # -- socket lifecycle
    def _open(self) -> zmq.Socket:
        if self._sock is None:
            s = context().socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.IMMEDIATE, 1)          # fail sends while not connected instead of queueing
            s.setsockopt(zmq.RECONNECT_IVL, 20)      # zmq's own reconnect backoff: 20 ms doubling ...
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)  # ... up to 1 s
            s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            s.setsockopt(zmq.SNDHWM, 100)
            if ":" in self.host:
                s.setsockopt(zmq.IPV6, 1)
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- calls
    def call(self, type_: str, fields: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None, timeout_s: float | None = None,
             raise_remote: bool = True) -> Message:
        """Send one request and wait for its reply.

        Raises :class:`PeerUnavailable` when no reply arrives within ``timeout_s`` (default:
        the channel's), :class:`RemoteError` when the peer answers ``error`` (unless
        ``raise_remote=False``), :class:`MessageError` on a malformed reply.
        """
        self.seq += 1
        header = dict(fields or {})
        header.update(type=type_, seq=self.seq, session=self.session)
        if self.token:
            header["token"] = self.token
        frames = encode(header, arrays)
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + timeout
        backoff = 0.02
        attempts = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                self._reset()
                if attempts == 0:
                    raise PeerUnavailable(f"cannot connect to {self.name} at {self.host}:{self.port} within "
                                          f"{timeout:g} s ({type_!r}); is it running and reachable?")
                raise PeerUnavailable(
                    f"{self.name} at {self.host}:{self.port} did not answer {type_!r} within {timeout:g} s "
                    f"({attempts} attempts); is it running and reachable?")
            sock = self._open()
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                sent = True
            except zmq.Again:  # not connected (IMMEDIATE): wait for zmq's reconnect
                sent = False
            if sent:
                attempts += 1
                if attempts > 1:
                    self.resends += 1
                attempt_end = min(deadline, time.monotonic() + self.attempt_timeout_s)
                reply = self._wait_reply(sock, attempt_end)
                if reply is not None:
                    if reply.type == "error" and raise_remote:
                        raise RemoteError(f"{self.name} at {self.host}:{self.port} refused {type_!r}: "
                                          f"{reply.header.get('error', '?')}", str(reply.header.get("code", "error")))
                    return reply
                # Lazy pirate: a REQ-like exchange that timed out must start over on a fresh socket.
                self._reset()
            else:
                # Not connected yet: give zmq a moment to (re)connect; keep the socket.
                time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
                continue
            time.sleep(max(0.0, min(backoff, deadline - time.monotonic())))
            backoff = min(backoff * 2, 1.0)

    def _wait_reply(self, sock: zmq.Socket, attempt_end: float) -> Message | None:
        while True:
            remaining = attempt_end - time.monotonic()
            if remaining <= 0:
                return None
            if not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                continue
            frames = sock.recv_multipart(zmq.NOBLOCK)
            msg = decode(frames)
            if msg.seq != self.seq:  # a late reply to an earlier attempt/call: drop it
                continue
            return msg


def new_session() -> str:
    return secrets.token_hex(8)


def arrays_from(items: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in items}
