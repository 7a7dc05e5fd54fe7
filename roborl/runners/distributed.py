"""The actor/learner split across machines: ``roborl train CONFIG --role learner|actor``.

* **actor** (the robot's machine): acts with the latest weights it has, writes every
  transition to its *local* store first (durable on return: this is the spill), and
  streams the rows the learner has not acknowledged yet. The stream position of a
  transition is its logical row in the actor's online partition (``seq``), so a restarted
  actor resumes its stream from its own store.
* **learner** (the GPU machine): binds a ROUTER socket, appends received transitions to
  its store, runs the off-policy runner's updates (the same ``OffPolicyRunner.update`` the
  local loop calls), publishes the learner's acting weights every ``distributed.push_every``
  updates and checkpoints. Acks are exactly-once: the learner's count of stored rows for
  an actor is ``online logical end - base`` where ``base`` (written atomically before the
  first ack, ``actor_stream.json``) is where that actor's stream starts in the store.
  The store's WAL makes a row durable when ``add_step`` returns, and a push is acked only
  after that, so after ``kill -9`` the count read back from the store is exactly what was
  stored: the actor resends from there and duplicates are cut by ``first_seq``.
* If the learner disappears, every call fails within its deadline
  (:class:`~roborl.robots.transport.PeerUnavailable`); the actor keeps acting with its last
  weights (``on_disconnect: act``) or stops sending commands (``hold``; behind a robot
  server the watchdog then holds the arm), retries with backoff and resends the backlog
  when the learner is back. An episode cut by a learner crash is stored as an
  interrupted episode plus its continuation (both bootstrap correctly).

One actor per learner store (the store has one open episode at a time). LeRobot #3979
and serl #66 are the failure modes this avoids: no call here can block forever.

Both sides drive an :class:`roborl.runners.off_policy.OffPolicyRunner` handed in by the caller
(``make_runner``), through its public methods only; the actor steps its env with
:func:`roborl.envs.step.env_step` like the local loop.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from roborl.errors import UsageError
from roborl.runners.config import DistributedConfig  # noqa: F401  (re-exported)

DEFAULT_LEARNER_ADDR = "127.0.0.1:5560"
STREAM_FIELDS = ("obs", "action", "executed_action", "reward", "next_obs", "terminated", "truncated", "is_success")


# ----------------------------------------------------------------------------- helpers

def online_end(store: Any) -> int:
    """The online partition's next logical row = rows ever appended (eviction never renumbers).

    Uses the store's public ``end_row``.
    """
    return int(store.end_row("online"))


def episode_starts(store: Any, start: int, stop: int) -> np.ndarray:
    """bool [stop-start]: row r starts an episode in the actor's store (ended episodes + the open one)."""
    eps = store.episodes("online")
    first = np.zeros(stop - start, bool)
    starts = eps[:, 0] if len(eps) else np.zeros(0, np.int64)
    if len(eps):
        starts = np.concatenate([starts, [eps[-1, 0] + eps[-1, 1]]])  # the open episode starts after the last one
    else:
        starts = np.array([store.head_row("online")], np.int64)
    sel = starts[(starts >= start) & (starts < stop)] - start
    first[sel.astype(np.int64)] = True
    return first


def pack_weights(state_dict: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Named tensors (the learner's ``acting_state()``) -> (manifest, uint8 blob)."""
    manifest, chunks, off = [], [], 0
    for k, v in state_dict.items():
        a = np.ascontiguousarray(v.detach().cpu().numpy())
        manifest.append({"name": k, "dtype": a.dtype.str, "shape": list(a.shape), "offset": off, "nbytes": a.nbytes})
        chunks.append(a.view(np.uint8).reshape(-1))
        off += a.nbytes
    blob = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return manifest, blob


def unpack_weights(manifest: list[dict[str, Any]], blob: np.ndarray) -> dict[str, Any]:
    import torch

    out = {}
    raw = np.asarray(blob, np.uint8)
    for m in manifest:
        a = raw[m["offset"]: m["offset"] + m["nbytes"]].view(np.dtype(m["dtype"])).reshape(m["shape"])
        out[m["name"]] = torch.from_numpy(a.copy())
    return out


# ----------------------------------------------------------------------------- learner side

class TransitionSink:
    """The learner's side of the stream: exactly-once appends of one actor's transitions to a store."""

    def __init__(self, store: Any, state_path: Path) -> None:
        self.store = store
        self.state_path = Path(state_path)
        st = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.actor_id: str | None = st.get("actor_id")
        self.base: int = int(st.get("base", 0))
        self.episode_open = False  # after a (re)start, the next row always starts an episode

    def next_seq(self, actor_id: str) -> int:
        from roborl.checkpoint import atomic_write_text

        if actor_id != self.actor_id:
            # A new actor stream starts here; persisted before anything of it is acked.
            if self.episode_open:
                self.store.end_episode()
                self.episode_open = False
            self.actor_id, self.base = actor_id, online_end(self.store)
            atomic_write_text(self.state_path, json.dumps({"actor_id": actor_id, "base": self.base}))
        return online_end(self.store) - self.base

    def ingest(self, actor_id: str, first_seq: int, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        """Append the rows not stored yet -> (acked next seq, rows added). Rows are validated first."""
        expected = self.next_seq(actor_id)
        n = int(arrays["reward"].shape[0])
        for k in STREAM_FIELDS + ("first",):
            if k not in arrays or arrays[k].shape[:1] != (n,):
                raise ValueError(f"push: field {k!r} missing or not of length {n}")
        if first_seq > expected:
            return expected, 0  # a gap: the actor resends from `expected`
        skip = expected - first_seq
        added = 0
        st = self.store
        obs, nobs = arrays["obs"], arrays["next_obs"]
        for i in range(skip, n):
            if arrays["first"][i] or not self.episode_open:
                st.start_episode(obs[i], partition="online")
                self.episode_open = True
            term, trunc = bool(arrays["terminated"][i]), bool(arrays["truncated"][i])
            st.add_step(action=arrays["action"][i], executed_action=arrays["executed_action"][i],
                        reward=float(arrays["reward"][i]), next_obs=nobs[i], terminated=term, truncated=trunc,
                        is_success=bool(arrays["is_success"][i]))
            added += 1
            if term or trunc:
                self.episode_open = False
        return online_end(st) - self.base, added


class LearnerEndpoint:
    """ROUTER socket of the learner: ``hello_actor``, ``push``, ``weights``, ``ping``, ``bye``."""

    def __init__(self, sink: TransitionSink, host: str, port: int, token: str | None) -> None:
        from roborl.robots.transport import bind_router

        self.sink = sink
        self.token = token
        self.sock = bind_router(host, port, "learner")
        self.weights_version = 0
        self.manifest: list[dict[str, Any]] = []
        self.blob = np.zeros(0, np.uint8)
        self.received = 0
        self.bye = False
        self.counts: dict[str, int] = {}

    def publish(self, state_dict: dict[str, Any]) -> None:
        self.manifest, self.blob = pack_weights(state_dict)
        self.weights_version += 1

    def poll(self, timeout_ms: int, budget: int = 64) -> int:
        """Handle waiting requests (waiting at most ``timeout_ms`` for the first) -> rows added."""
        import zmq

        from roborl.robots.transport import router_recv

        added = 0
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return 0
        for _ in range(budget):
            try:
                env, frames = router_recv(self.sock)
            except zmq.Again:
                break
            added += self._handle(env, frames)
        return added

    def _handle(self, envelope: list[bytes], frames: list[bytes]) -> int:
        """One request -> one reply. Never raises: the token is checked before any array frame is
        decoded, and whatever else goes wrong while handling this message becomes an ``error``
        reply to it while the learner keeps serving."""
        from roborl.robots.transport import error_reply, router_send

        try:
            return self._serve_one(envelope, frames)
        except Exception as e:  # noqa: BLE001 - one bad message must not stop the learner
            self.counts["internal_errors"] = self.counts.get("internal_errors", 0) + 1
            try:
                router_send(self.sock, envelope, error_reply(_request_header(frames), "internal",
                                                             f"learner error ({type(e).__name__})"))
            except Exception:  # noqa: BLE001 - even the reply failed: drop it
                pass
            return 0

    def _serve_one(self, envelope: list[bytes], frames: list[bytes]) -> int:
        from roborl.robots.transport import MessageError, Unauthorized, decode, encode, error_reply, router_send

        def count(k: str) -> None:
            self.counts[k] = self.counts.get(k, 0) + 1

        try:
            # The token is compared right after the bounded header parse, before any array is read.
            msg = decode(frames, token=self.token)
        except Unauthorized:
            count("refused_unauthorized")
            router_send(self.sock, envelope, error_reply(_request_header(frames), "unauthorized",
                                                         "missing or wrong token"))
            return 0
        except MessageError as e:
            count("refused_malformed")
            router_send(self.sock, envelope, error_reply(None, "malformed", f"malformed message: {e}"))
            return 0
        h = msg.header
        actor = h.get("actor_id")
        added = 0
        try:
            if msg.type == "ping":
                rep = encode({"type": "pong", "seq": msg.seq})
            elif msg.type in ("hello_actor", "push", "bye") and (not isinstance(actor, str) or not 0 < len(actor) <= 64):
                raise MessageError("'actor_id' must be a string of 1..64 characters")
            elif msg.type == "hello_actor":
                rep = encode({"type": "hello_actor", "seq": msg.seq, "next_seq": self.sink.next_seq(actor),
                              "weights_version": self.weights_version})
            elif msg.type == "push":
                first = h.get("first_seq")
                if not isinstance(first, int) or isinstance(first, bool) or first < 0:
                    raise MessageError("'first_seq' must be an integer >= 0")
                try:
                    acked, added = self.sink.ingest(actor, first, msg.arrays)
                except (ValueError, TypeError) as e:
                    raise MessageError(str(e)) from None
                self.received += added
                rep = encode({"type": "push", "seq": msg.seq, "acked": acked, "weights_version": self.weights_version})
            elif msg.type == "weights":
                have = h.get("have", 0)
                if isinstance(have, int) and have >= self.weights_version:
                    rep = encode({"type": "weights", "seq": msg.seq, "version": self.weights_version})
                else:
                    rep = encode({"type": "weights", "seq": msg.seq, "version": self.weights_version,
                                  "manifest": self.manifest}, {"blob": self.blob})
            elif msg.type == "bye":
                self.bye = True
                rep = encode({"type": "bye", "seq": msg.seq})
            else:
                count("refused_bad_type")
                rep = error_reply(h, "bad_type", f"unknown message type {msg.type!r}")
        except MessageError as e:
            count("refused_rejected")
            rep = error_reply(h, "rejected", str(e))
        router_send(self.sock, envelope, rep)
        return added

    def close(self) -> None:
        self.sock.close(0)


def _request_header(frames: list[bytes]) -> dict[str, Any] | None:
    """The request's validated header (bounded parse, no array touched), so an error reply carries
    its ``seq`` and the caller's channel accepts it; None when the header itself is malformed."""
    from roborl.robots.transport import MessageError, decode_header

    try:
        return decode_header(frames)
    except MessageError:
        return None


def learner_updates(runner: Any, acc: Any, n: int) -> None:
    """``n`` gradient updates on a remote learner: the local loop's path (``set_progress`` at the
    current env step, then ``runner.update``), one update at a time so the caller can answer the
    socket and publish weights in between."""
    for _ in range(n):
        runner.learner.set_progress(runner.step)
        runner.update(acc, 1)


def run_learner(cfg: Any, run_dir: Path, addr: str | None, make_runner: Callable[..., Any]) -> int:
    from roborl.robots.transport import is_loopback, parse_hostport, resolve_token
    from roborl.runs import Accumulator, MetricsLogger, write_config

    dcfg: DistributedConfig = cfg.distributed
    host, port = parse_hostport(addr or DEFAULT_LEARNER_ADDR, "--learner")
    token = resolve_token(None)
    if not is_loopback(host) and not token:
        raise UsageError(f"--learner {host}:{port} is not loopback: set $ROBORL_ROBOT_TOKEN on learner and actor")
    runner = make_runner(cfg, run_dir, with_env=False)
    endpoint = None
    try:
        resumed = runner.try_resume()
        write_config(run_dir, cfg)
        sink = TransitionSink(runner.store, Path(run_dir) / "actor_stream.json")
        endpoint = LearnerEndpoint(sink, host, port, token)
        logger = MetricsLogger(run_dir)
        if resumed:
            print(f"learner: resumed from step {runner.step}", file=sys.stderr, flush=True)
        if sink.actor_id is not None:
            runner.advance_to(online_end(runner.store) - sink.base)
        print(f"learner: listening on {host}:{port}", file=sys.stderr, flush=True)
        t0 = time.time() - runner.wall_offset
        total = cfg.train.total_steps
        utd = runner.lcfg.utd
        owed, updates, acc = 0, 0, Accumulator()
        last_ckpt = last_log = runner.step
        if runner.learning_started:
            endpoint.publish(runner.acting_state())
        done_at: float | None = None
        while True:
            added = endpoint.poll(0 if owed > 0 else 20)
            if added:
                runner.advance_to(runner.step + added)
                if runner.learning_started:
                    owed += added * utd
            if not runner.learning_started and runner.ready_to_learn():
                runner.start_learning()
                endpoint.publish(runner.acting_state())
            for _ in range(min(owed, 8)):  # a few updates, then the socket again: stay responsive
                learner_updates(runner, acc, 1)
                owed -= 1
                updates += 1
                if updates % dcfg.push_every == 0:
                    endpoint.publish(runner.acting_state())
            if runner.step - last_log >= cfg.train.log_every:
                row = acc.pop()
                row.update({"learner/received": endpoint.received, "learner/updates": updates,
                            "learner/weights_version": endpoint.weights_version})
                logger.log(runner.step, row)
                last_log = runner.step
            if runner.step - last_ckpt >= cfg.train.checkpoint_every:
                runner.save(time.time() - t0)
                last_ckpt = runner.step
            if runner.step >= total and owed == 0 and done_at is None:
                runner.save(time.time() - t0)
                last_ckpt = runner.step
                done_at = time.monotonic()
            if done_at is not None and (endpoint.bye or time.monotonic() - done_at > dcfg.linger_s):
                break
            if cfg.train.max_minutes and time.time() - t0 > 60 * cfg.train.max_minutes:
                runner.save(time.time() - t0)
                break
        logger.close()
        print(json.dumps({"role": "learner", "run_dir": str(run_dir), "env_steps": runner.step, "updates": updates,
                          "received": endpoint.received, "weights_version": endpoint.weights_version,
                          "online_steps": runner.store.num_steps("online")}), flush=True)
        return 0
    finally:
        if endpoint is not None:
            endpoint.close()
        runner.close()


# ----------------------------------------------------------------------------- actor side

class ActorLink:
    """The actor's connection to the learner: handshake, backlog pushes, weight pulls; never blocks past a deadline."""

    def __init__(self, store: Any, host: str, port: int, token: str | None, actor_id: str, cfg: DistributedConfig) -> None:
        from roborl.robots.transport import Channel

        self.store, self.cfg, self.actor_id = store, cfg, actor_id
        self.ch = Channel(host, port, token=token, timeout_s=cfg.timeout_s,
                          attempt_timeout_s=min(0.5, cfg.timeout_s), name="learner")
        self.acked: int | None = None   # learner's next expected seq (None: not connected)
        self.remote_version = 0
        self.next_try = 0.0
        self.backoff = 0.25
        self.sent = 0
        self.disconnects = 0

    @property
    def connected(self) -> bool:
        return self.acked is not None

    def _lost(self, err: Exception) -> None:
        if self.acked is not None:
            self.disconnects += 1
            print(f"actor: learner unavailable ({err}); keeping transitions in the local store, retrying",
                  file=sys.stderr, flush=True)
        self.acked = None
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 5.0)

    def maybe_connect(self) -> bool:
        from roborl.robots.transport import PeerUnavailable

        if self.connected or time.monotonic() < self.next_try:
            return self.connected
        try:
            rep = self.ch.call("hello_actor", {"actor_id": self.actor_id}, timeout_s=min(1.0, self.cfg.timeout_s))
        except PeerUnavailable as e:
            self._lost(e)
            return False
        self.acked = int(rep.header["next_seq"])
        end = online_end(self.store)
        if self.acked > end:
            raise UsageError(f"learner has {self.acked} transitions of actor {self.actor_id} but this actor's store "
                             f"only {end}: wrong actor run.dir?")
        self.remote_version = int(rep.header.get("weights_version", 0))
        self.backoff = 0.25
        if self.disconnects:
            print(f"actor: learner is back; resending from seq {self.acked}", file=sys.stderr, flush=True)
        return True

    def backlog(self) -> int:
        return online_end(self.store) - (self.acked or 0)

    def push(self, max_messages: int = 4) -> None:
        """Send up to ``max_messages`` batches of unacked rows."""
        from roborl.robots.transport import PeerUnavailable

        for _ in range(max_messages):
            if not self.connected:
                return
            end = online_end(self.store)
            a = self.acked or 0
            if a >= end:
                return
            head = self.store.head_row("online")
            if a < head:
                raise UsageError(f"actor store evicted rows [{a}, {head}) before the learner acked them; "
                                 f"raise store.online_capacity")
            b = min(end, a + self.cfg.batch)
            rows = self.store.read_rows("online", a, b, fields=self._fields())
            arrays = self._stream_arrays(rows)
            arrays["first"] = episode_starts(self.store, a, b)
            try:
                rep = self.ch.call("push", {"actor_id": self.actor_id, "first_seq": a}, arrays)
            except PeerUnavailable as e:
                self._lost(e)
                return
            self.acked = int(rep.header["acked"])
            self.sent += b - a
            self.remote_version = int(rep.header.get("weights_version", self.remote_version))

    def pull_weights(self, have: int) -> tuple[int, dict[str, Any] | None]:
        from roborl.robots.transport import PeerUnavailable

        if not self.connected or self.remote_version <= have:
            return have, None
        try:
            rep = self.ch.call("weights", {"have": have})
        except PeerUnavailable as e:
            self._lost(e)
            return have, None
        if "blob" not in rep.arrays:
            return int(rep.header.get("version", have)), None
        return int(rep.header["version"]), unpack_weights(rep.header["manifest"], rep.arrays["blob"])

    def bye(self) -> None:
        from roborl.robots.transport import PeerUnavailable

        try:
            self.ch.call("bye", {"actor_id": self.actor_id}, timeout_s=1.0)
        except PeerUnavailable:
            pass

    def _fields(self) -> list[str]:
        names = set(self.store.field_names)
        return [f for f in self.store.field_names if f.split(".")[0] in STREAM_FIELDS and f in names]

    def _stream_arrays(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k in STREAM_FIELDS:
            if k not in rows:
                raise UsageError(f"actor store has no field {k!r}: the split needs flat (Box) observations")
            out[k] = np.ascontiguousarray(rows[k])
        return out

    def close(self) -> None:
        self.ch.close()


def run_actor(cfg: Any, run_dir: Path, addr: str | None, make_runner: Callable[..., Any]) -> int:
    import secrets

    from roborl.checkpoint import atomic_write_text
    from roborl.envs.step import env_step
    from roborl.robots.transport import parse_hostport, resolve_token

    dcfg: DistributedConfig = cfg.distributed
    if not addr:
        raise UsageError("--role actor needs --learner HOST:PORT")
    host, port = parse_hostport(addr, "--learner")
    runner = make_runner(cfg, run_dir)
    link = None
    try:
        id_path = Path(run_dir) / "actor_id"
        if not id_path.exists():
            atomic_write_text(id_path, secrets.token_hex(8))
        actor_id = id_path.read_text().strip()
        store, env = runner.store, runner.env
        assert env is not None
        runner.advance_to(online_end(store))  # the stream position; a restarted actor continues it
        link = ActorLink(store, host, port, resolve_token(None), actor_id, dcfg)
        version = 0
        total = cfg.train.total_steps
        period = 1.0 / dcfg.actor_hz if dcfg.actor_hz else 0.0
        next_t = time.monotonic()
        held_s, steps_disconnected, last_send = 0.0, 0, time.monotonic()
        episodes = store.total_episodes("online")
        obs, _ = env.reset(seed=cfg.run.seed + episodes)
        store.start_episode(obs, partition="online")
        while runner.step < total:
            link.maybe_connect()
            version, weights = link.pull_weights(version)
            if weights is not None:
                runner.load_acting_state(weights)
            if not link.connected and dcfg.on_disconnect == "hold":
                time.sleep(0.05)  # no commands: a robot server's watchdog holds the arm
                held_s += 0.05
                continue
            if period:
                now = time.monotonic()
                if now < next_t:
                    time.sleep(next_t - now)
                next_t = max(next_t + period, time.monotonic() - period)
            s = env_step(env, obs, runner.act(obs), sink=store)
            runner.advance_to(runner.step + 1)
            if not link.connected:
                steps_disconnected += 1
            obs = s.next_obs
            if s.done:
                episodes += 1
                obs, _ = env.reset(seed=cfg.run.seed + episodes)
                store.start_episode(obs, partition="online")
            if link.connected and (link.backlog() >= dcfg.send_every or time.monotonic() - last_send > 1.0):
                link.push()
                last_send = time.monotonic()
        # Drain the backlog (bounded): the learner may be restarting right now.
        store.commit()
        deadline = time.monotonic() + max(30.0, 10 * dcfg.timeout_s)
        while time.monotonic() < deadline and (not link.connected or link.backlog() > 0):
            if link.maybe_connect():
                link.push(max_messages=64)
            else:
                time.sleep(0.05)
        unacked = link.backlog() if link.connected else online_end(store) - (link.acked or 0)
        if link.connected and unacked == 0:
            link.bye()
        print(json.dumps({"role": "actor", "run_dir": str(run_dir), "env_steps": runner.step, "sent": link.sent,
                          "unacked": unacked, "disconnects": link.disconnects,
                          "steps_while_disconnected": steps_disconnected, "held_s": round(held_s, 2),
                          "weights_version": version}), flush=True)
        if unacked:
            print(f"actor: {unacked} transitions not acked by the learner; they stay in {store.path} and are "
                  f"resent when this actor runs again", file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        if link is not None:
            link.close()
        runner.close()


def run(cfg: Any, run_dir: Path, role: str, learner_addr: str | None, make_runner: Callable[..., Any]) -> int:
    """Entry point called by :func:`roborl.runners.off_policy.run` for ``role`` in {learner, actor};
    ``make_runner(cfg, run_dir, with_env=...)`` builds the runner both sides drive."""
    if not hasattr(cfg, "distributed"):
        raise UsageError("the run config has no 'distributed' section (roborl.runners.config.RunConfig)")
    if role == "learner":
        return run_learner(cfg, Path(run_dir), learner_addr, make_runner)
    if role == "actor":
        return run_actor(cfg, Path(run_dir), learner_addr, make_runner)
    raise UsageError(f"--role {role!r}: expected local, learner or actor")
