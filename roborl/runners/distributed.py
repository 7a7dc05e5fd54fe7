"""The actor/learner split across machines: ``roborl train CONFIG --role learner|actor``.

* **actors** (robots' machines, sims, or a mix; any number): each acts with the latest weights
  it has, writes every transition to its *local* store first (durable on return: this is the
  spill), and streams the rows the learner has not acknowledged yet. The stream position of a
  transition is its logical row in the actor's online partition (``seq``), so a restarted actor
  resumes its stream from its own store. Each actor has an identity (``--actor-id``, or one made
  up once and kept in ``run.dir/actor_id``).
* **learner** (the GPU machine): binds a ROUTER socket, appends each actor's transitions to its
  own store *stream* (:meth:`roborl.store.ReplayStore.start_episode` ``stream=``: one open
  episode per actor, written whole when it ends), runs the off-policy runner's updates (the same
  ``OffPolicyRunner.update`` the local loop calls), publishes the acting weights every
  ``distributed.push_every`` updates (every actor pulls them) and checkpoints. Its env-step count
  is the sum of the actors' stored rows; it tells the actors to stop when it reaches
  ``train.total_steps``.
* Exactly once, per actor: the learner acknowledges an actor's rows up to
  ``store.stream_rows(actor)``, the rows of that actor's *ended* episodes, which the store
  persists with the rows themselves (one WAL record per episode). A push also tells the learner
  where the actor's ended episodes end (``ended_upto``), so the learner ends an episode the actor
  cut (interrupted, or the actor's last one) without waiting for more rows. After ``kill -9`` of
  the learner the open episodes it held in memory are gone, but they were never acknowledged:
  every actor resends from its acknowledged position, and rows below it are cut by
  ``first_seq``. After ``kill -9`` of an actor its store closes its open episode as interrupted;
  it resends from what the learner acknowledged. Nothing acknowledged is lost and nothing is
  stored twice.
* Identity: every actor process has a session nonce (its channel's ``session``) and keeps it in
  ``run.dir/actor_session``. A second live process that presents an identity already connected
  is refused with one line (``duplicate_actor``); a restarted actor presents the previous
  session of its run dir (``prev_session``) and takes over at once; a session not heard from
  for ``distributed.actor_timeout_s`` is gone.
* If the learner disappears, every call fails within its deadline
  (:class:`~roborl.robots.transport.PeerUnavailable`); an actor keeps acting with its last
  weights (``on_disconnect: act``) or stops sending commands (``hold``; behind a robot
  server the watchdog then holds the arm), retries with backoff and resends the backlog
  when the learner is back.

LeRobot #3979 and serl #66 are the failure modes this avoids: no call here can block forever.

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
# Per-step fields that travel too when the actor's store has them: the operator's intervention flag,
# the behaviour policy's log-prob (Retrace's mu) and the reward classifier's fields. A learner store
# field a push lacks gets the value that means "not recorded" (``_optional_fill``), never a zero that
# would read as a label (operator_label 0 is "failure").
OPTIONAL_STREAM_FIELDS = ("intervention", "log_prob", "classifier_prob", "classifier_reward", "operator_label")


def _optional_fill(name: str) -> float | int:
    if name in ("intervention", "log_prob"):
        return 0 if name == "intervention" else float("nan")
    from roborl.reward.wrapper import STORE_FIELD_FILL  # only for a store with the classifier's fields

    return STORE_FIELD_FILL[name]


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

ACTOR_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_actor_id(actor_id: Any) -> str | None:
    """Why ``actor_id`` is not a usable identity (None when it is): 1..64 of [A-Za-z0-9_.-]."""
    if not isinstance(actor_id, str) or not 0 < len(actor_id) <= 64 or not set(actor_id) <= ACTOR_ID_CHARS:
        return f"actor id {actor_id!r} must be 1..64 characters of A-Z a-z 0-9 _ . -"
    return None


class ActorStats:
    """What the learner stored of one actor since it started (ended episodes only): rows, episodes,
    successes and intervention rows, for the per-actor metrics."""

    def __init__(self) -> None:
        self.rows = self.episodes = self.successes = self.interventions = 0
        self.open_rows = self.open_interventions = 0
        self.open_success = False

    def end_episode(self) -> None:
        if self.open_rows:
            self.rows += self.open_rows
            self.interventions += self.open_interventions
            self.episodes += 1
            self.successes += int(self.open_success)
        self.discard()

    def discard(self) -> None:
        self.open_rows = self.open_interventions = 0
        self.open_success = False

    def row(self) -> dict[str, float]:
        return {"rows": self.rows, "episodes": self.episodes,
                "success_rate": self.successes / self.episodes if self.episodes else float("nan"),
                "intervention_rate": self.interventions / self.rows if self.rows else float("nan")}


class TransitionSink:
    """The learner's side of the streams: exactly-once appends of every actor's transitions, each
    actor in its own store stream (named by its id)."""

    def __init__(self, store: Any, offsets: dict[str, int] | None = None) -> None:
        self.store = store
        self.open: set[str] = set()   # actors with an open episode in the store (none after a (re)start)
        self.stats: dict[str, ActorStats] = {}
        # Rows an actor's stream had before it had a store stream (see legacy_offsets); the
        # per-actor positions otherwise live in the store (stream_rows), persisted with the rows.
        self.offsets = dict(offsets or {})

    def acked(self, actor_id: str) -> int:
        """Rows of ``actor_id`` durably stored (its ended episodes): what the actor may forget."""
        return self.offsets.get(actor_id, 0) + int(self.store.stream_rows(actor_id))

    def next_seq(self, actor_id: str) -> int:
        """The actor's next seq this learner expects (acked + its open episode's rows)."""
        return self.acked(actor_id) + int(self.store.stream_open_rows(actor_id))

    def total(self) -> int:
        """Env steps of all actors durably stored: the learner's env-step count."""
        return int(sum(self.store.streams().values())) + sum(self.offsets.values())

    def _end(self, actor_id: str) -> None:
        if actor_id in self.open:
            self.store.end_episode(stream=actor_id)
            self.open.discard(actor_id)
            self.stats.setdefault(actor_id, ActorStats()).end_episode()

    def ingest(self, actor_id: str, first_seq: int, arrays: dict[str, np.ndarray],
               ended_upto: int | None = None) -> tuple[int, int]:
        """Append the rows not stored yet -> (acked seq, rows added). Rows are validated first.

        ``first[i]``: row i starts an episode in the actor's store; ``ended_upto``: the actor's
        rows below it are in ended episodes, so an open episode that reaches it is ended here
        (interrupted) instead of waiting for a next row."""
        expected = self.next_seq(actor_id)
        n = int(arrays["reward"].shape[0]) if "reward" in arrays else -1
        for k in STREAM_FIELDS + ("first",):
            if k not in arrays or arrays[k].shape[:1] != (n,):
                raise ValueError(f"push: field {k!r} missing or not of length {n}")
        names = self.store.dtype.names
        for k in OPTIONAL_STREAM_FIELDS:
            if k in arrays and arrays[k].shape != (n,):
                raise ValueError(f"push: field {k!r} not of shape [{n}]")
        for k in STREAM_FIELDS:  # checked before any row is written: a bad push changes nothing
            want = self.store.dtype[k].shape if k in names else None
            if want is not None and tuple(arrays[k].shape[1:]) != tuple(want):
                raise ValueError(f"push: field {k!r} has rows of shape {list(arrays[k].shape[1:])}, "
                                 f"the learner's store {list(want)}")
        if first_seq > expected:
            return self.acked(actor_id), 0  # a gap: the actor resends from `expected`
        st, stats = self.store, self.stats.setdefault(actor_id, ActorStats())
        lo = expected - first_seq
        if lo >= n:
            added = 0
        else:
            term = np.asarray(arrays["terminated"][lo:], bool)
            trunc = np.asarray(arrays["truncated"][lo:], bool)
            succ = np.asarray(arrays["is_success"][lo:], bool)
            first = np.asarray(arrays["first"][lo:], bool)
            inter = np.asarray(arrays["intervention"][lo:], bool) if "intervention" in arrays \
                else np.zeros(n - lo, bool)
            cols = {"action": arrays["action"][lo:], "executed_action": arrays["executed_action"][lo:],
                    "reward": arrays["reward"][lo:], "next_obs": arrays["next_obs"][lo:], "terminated": term,
                    "truncated": trunc, "is_success": succ, "intervention": inter}
            for k in OPTIONAL_STREAM_FIELDS[1:]:
                if k in names:
                    cols[k] = arrays[k][lo:] if k in arrays else np.full(n - lo, _optional_fill(k), self.store.dtype[k])
            obs = arrays["obs"][lo:]
            # Segments of one episode each: cut before a row that starts an episode and after one
            # that ends it; each segment goes to the store in one add_steps call.
            cuts = np.union1d(np.flatnonzero(first), np.flatnonzero(term | trunc) + 1)
            bounds = [0, *[int(c) for c in cuts if 0 < c < n - lo], n - lo]
            for i0, i1 in zip(bounds[:-1], bounds[1:]):
                if first[i0]:
                    self._end(actor_id)  # the actor's episode was cut there (interrupted)
                if actor_id not in self.open:
                    st.start_episode(obs[i0], partition="online", stream=actor_id)
                    self.open.add(actor_id)
                st.add_steps({k: v[i0:i1] for k, v in cols.items()}, stream=actor_id)
                stats.open_rows += i1 - i0
                stats.open_interventions += int(inter[i0:i1].sum())
                stats.open_success |= bool(succ[i0:i1].any())
                if term[i1 - 1] or trunc[i1 - 1]:  # the store wrote the episode whole
                    self.open.discard(actor_id)
                    stats.end_episode()
            added = n - lo
        if ended_upto is not None and actor_id in self.open and self.next_seq(actor_id) == ended_upto:
            self._end(actor_id)
        return self.acked(actor_id), added

    def end_all(self) -> None:
        """Write every open episode (interrupted): a clean learner exit keeps what it holds."""
        for a in sorted(self.open):
            self._end(a)


class DuplicateActor(Exception):
    """A second live process presents an actor identity already connected."""


class Session:
    def __init__(self, session: str) -> None:
        self.session = session
        self.last_seen = time.monotonic()
        self.bye = False


class LearnerEndpoint:
    """ROUTER socket of the learner: ``hello_actor``, ``push``, ``weights``, ``ping``, ``bye``."""

    def __init__(self, sink: TransitionSink, host: str, port: int, token: str | None,
                 actor_timeout_s: float = 10.0) -> None:
        from roborl.robots.transport import bind_router

        self.sink = sink
        self.token = token
        self.actor_timeout_s = float(actor_timeout_s)
        self.sock = bind_router(host, port, "learner")
        self.weights_version = 0
        self.manifest: list[dict[str, Any]] = []
        self.blob = np.zeros(0, np.uint8)
        self.received = 0
        self.done = False  # the learner reached its step budget: actors are told to stop
        self.sessions: dict[str, Session] = {}
        self.last_activity = time.monotonic()
        self.counts: dict[str, int] = {}

    @property
    def bye(self) -> bool:
        """Some actor said goodbye (kept for callers of the one-actor endpoint)."""
        return any(s.bye for s in self.sessions.values())

    def live_actors(self) -> list[str]:
        """Actors connected now: not said goodbye, heard from within ``actor_timeout_s``."""
        now = time.monotonic()
        return sorted(a for a, s in self.sessions.items() if not s.bye and now - s.last_seen <= self.actor_timeout_s)

    def admit(self, actor: str, session: Any, prev_session: Any = None) -> None:
        """Register or refresh ``actor``'s session; DuplicateActor when another live process holds it.

        A process is one session (the actor channel's nonce). A new session takes over an
        identity when the old one said goodbye, is the new one's ``prev_session`` (the restarted
        actor of the same run dir: kill -9 leaves no goodbye), or was not heard from for
        ``actor_timeout_s``; otherwise it is a duplicate."""
        if not isinstance(session, str) or not session:
            raise DuplicateActor(f"actor {actor!r}: the request has no session")
        now = time.monotonic()
        cur = self.sessions.get(actor)
        if cur is not None and cur.session != session and not cur.bye and cur.session != prev_session \
                and now - cur.last_seen <= self.actor_timeout_s:
            self.counts["refused_duplicate"] = self.counts.get("refused_duplicate", 0) + 1
            raise DuplicateActor(f"actor id {actor!r} is already connected from another live process "
                                 f"(heard from {now - cur.last_seen:.1f} s ago); give each actor its own --actor-id")
        if cur is None or cur.session != session:
            if cur is not None and cur.session != session and actor in self.sink.open:
                # A new process of this actor resends from what was acked: drop what the old one
                # sent of its open episode (never acked; the new process resends it).
                self.sink.store.discard_episode(stream=actor)
                self.sink.open.discard(actor)
                self.sink.stats.setdefault(actor, ActorStats()).discard()
            self.sessions[actor] = cur = Session(session)
            print(f"learner: actor {actor} connected ({len(self.live_actors())} live)", file=sys.stderr, flush=True)
        cur.last_seen = now
        cur.bye = False

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
        self.last_activity = time.monotonic()
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
        sink = self.sink
        try:
            if msg.type == "ping":
                rep = encode({"type": "pong", "seq": msg.seq})
            elif msg.type in ("hello_actor", "push", "bye") and check_actor_id(actor):
                raise MessageError(f"'actor_id': {check_actor_id(actor)}")
            elif msg.type == "hello_actor":
                self.admit(actor, h.get("session"), h.get("prev_session"))
                rep = encode({"type": "hello_actor", "seq": msg.seq, "next_seq": sink.next_seq(actor),
                              "acked": sink.acked(actor), "weights_version": self.weights_version,
                              "done": self.done})
            elif msg.type == "push":
                first = h.get("first_seq")
                if not isinstance(first, int) or isinstance(first, bool) or first < 0:
                    raise MessageError("'first_seq' must be an integer >= 0")
                upto = h.get("ended_upto")
                if upto is not None and (not isinstance(upto, int) or isinstance(upto, bool) or upto < 0):
                    raise MessageError("'ended_upto' must be an integer >= 0")
                self.admit(actor, h.get("session"))
                try:
                    acked, added = sink.ingest(actor, first, msg.arrays, upto)
                except (ValueError, TypeError) as e:
                    raise MessageError(str(e)) from None
                self.received += added
                rep = encode({"type": "push", "seq": msg.seq, "acked": acked, "next_seq": sink.next_seq(actor),
                              "weights_version": self.weights_version, "done": self.done})
            elif msg.type == "weights":
                if isinstance(actor, str) and actor in self.sessions:
                    self.admit(actor, h.get("session"))
                have = h.get("have", 0)
                if isinstance(have, int) and have >= self.weights_version:
                    rep = encode({"type": "weights", "seq": msg.seq, "version": self.weights_version})
                else:
                    rep = encode({"type": "weights", "seq": msg.seq, "version": self.weights_version,
                                  "manifest": self.manifest}, {"blob": self.blob})
            elif msg.type == "bye":
                self.admit(actor, h.get("session"))
                self.sessions[actor].bye = True
                print(f"learner: actor {actor} said goodbye ({sink.acked(actor)} rows stored)", file=sys.stderr,
                      flush=True)
                rep = encode({"type": "bye", "seq": msg.seq})
            else:
                count("refused_bad_type")
                rep = error_reply(h, "bad_type", f"unknown message type {msg.type!r}")
        except DuplicateActor as e:
            rep = error_reply(h, "duplicate_actor", str(e))
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


def actor_metrics(sink: TransitionSink, store: Any) -> dict[str, float]:
    """Per-actor metric columns: ``actor/<id>/{stored,rows,episodes,success_rate,intervention_rate}``."""
    out: dict[str, float] = {}
    for a, n in sorted(store.streams().items()):
        out[f"actor/{a}/stored"] = n
        for k, v in sink.stats.get(a, ActorStats()).row().items():
            out[f"actor/{a}/{k}"] = v
    return out


def legacy_offsets(store: Any, path: Path) -> dict[str, int]:
    """A run dir of the one-actor learner (``actor_stream.json``: ``actor_id``, ``base``): that
    actor's rows are the default episodes from ``base`` on. Their count is written into the file
    once, before any stream row exists, so that actor resumes its stream where it was."""
    from roborl.checkpoint import atomic_write_text

    if not path.exists():
        return {}
    try:
        st = json.loads(path.read_text())
        actor, base = str(st["actor_id"]), int(st.get("base", 0))
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: unreadable ({type(e).__name__}); restore it or start a new run.dir") from None
    if "rows" not in st:
        st["rows"] = online_end(store) - base if not store.streams() else 0
        atomic_write_text(path, json.dumps(st))
    return {actor: int(st["rows"])}


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
        sink = TransitionSink(runner.store, legacy_offsets(runner.store, Path(run_dir) / "actor_stream.json"))
        endpoint = LearnerEndpoint(sink, host, port, token, dcfg.actor_timeout_s)
        logger = MetricsLogger(run_dir)
        if resumed:
            print(f"learner: resumed from step {runner.step}", file=sys.stderr, flush=True)
        runner.advance_to(sink.total())  # every stored actor row is an env step
        print(f"learner: listening on {host}:{port}", file=sys.stderr, flush=True)
        t0 = time.time() - runner.wall_offset
        total = cfg.train.total_steps
        utd = runner.lcfg.utd
        owed, updates, saved_updates, acc = 0, 0, 0, Accumulator()
        last_ckpt = last_log = runner.step
        if runner.learning_started:
            endpoint.publish(runner.acting_state())
        done_at: float | None = None
        while True:
            endpoint.poll(0 if owed > 0 else 20)
            stored = sink.total()
            if stored > runner.step:
                if runner.learning_started:
                    owed += (stored - runner.step) * utd
                runner.advance_to(stored)
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
                            "learner/weights_version": endpoint.weights_version,
                            "learner/live_actors": len(endpoint.live_actors())})
                row.update(actor_metrics(sink, runner.store))
                logger.log(runner.step, row)
                last_log = runner.step
            if runner.step - last_ckpt >= cfg.train.checkpoint_every:
                runner.save(time.time() - t0)
                last_ckpt, saved_updates = runner.step, updates
            if runner.step >= total and owed == 0 and done_at is None:
                endpoint.done = True  # every actor is told to stop at its next push
                runner.save(time.time() - t0)
                last_ckpt, saved_updates = runner.step, updates
                done_at = time.monotonic()
            if done_at is not None and (not endpoint.live_actors()
                                        or time.monotonic() - endpoint.last_activity > dcfg.linger_s):
                break
            if cfg.train.max_minutes and time.time() - t0 > 60 * cfg.train.max_minutes:
                break
        sink.end_all()
        runner.advance_to(sink.total())
        if runner.step != last_ckpt or updates != saved_updates:
            runner.save(time.time() - t0)
        logger.log(runner.step, actor_metrics(sink, runner.store))
        logger.close()
        print(json.dumps({"role": "learner", "run_dir": str(run_dir), "env_steps": runner.step, "updates": updates,
                          "received": endpoint.received, "weights_version": endpoint.weights_version,
                          "online_steps": runner.store.num_steps("online"), "actors": runner.store.streams()}),
              flush=True)
        return 0
    finally:
        if endpoint is not None:
            endpoint.close()
        runner.close()


# ----------------------------------------------------------------------------- actor side

def ended_upto(store: Any) -> int:
    """The actor's online rows below this are in ended episodes (the open episode starts here)."""
    eps = store.episodes("online")
    return int(eps[-1, 0] + eps[-1, 1]) if len(eps) else int(store.head_row("online"))


class ActorLink:
    """The actor's connection to the learner: handshake, backlog pushes, weight pulls; never blocks past a deadline.

    ``acked``: the learner stored the actor's rows below it (durable there; the actor keeps them
    until then); ``sent``: the learner has received the rows below it (its open episode)."""

    def __init__(self, store: Any, host: str, port: int, token: str | None, actor_id: str, cfg: DistributedConfig,
                 prev_session: str | None = None) -> None:
        from roborl.robots.transport import Channel

        self.store, self.cfg, self.actor_id = store, cfg, actor_id
        self.prev_session = prev_session
        self.ch = Channel(host, port, token=token, timeout_s=cfg.timeout_s,
                          attempt_timeout_s=min(0.5, cfg.timeout_s), name="learner")
        self.acked: int | None = None   # learner's stored rows of this actor (None: not connected)
        self.next = 0                   # learner's next expected seq
        self.remote_version = 0
        self.done = False               # the learner reached its step budget
        self.next_try = 0.0
        self.backoff = 0.25
        self.sent = 0
        self.disconnects = 0

    @property
    def session(self) -> str:
        """This process's session nonce (the channel's)."""
        return str(self.ch.session)

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

    def _reply(self, h: dict[str, Any]) -> None:
        self.acked = int(h["acked"])
        self.next = int(h["next_seq"])
        self.remote_version = int(h.get("weights_version", self.remote_version))
        self.done = bool(h.get("done", False))

    def maybe_connect(self) -> bool:
        from roborl.robots.transport import PeerUnavailable

        if self.connected or time.monotonic() < self.next_try:
            return self.connected
        try:
            rep = self.ch.call("hello_actor", {"actor_id": self.actor_id, "prev_session": self.prev_session},
                               timeout_s=min(1.0, self.cfg.timeout_s))
        except PeerUnavailable as e:
            self._lost(e)
            return False
        self._reply(rep.header)
        end = online_end(self.store)
        if self.next > end:
            raise UsageError(f"learner has {self.next} transitions of actor {self.actor_id} but this actor's store "
                             f"only {end}: wrong actor run.dir or --actor-id?")
        self.backoff = 0.25
        if self.disconnects:
            print(f"actor: learner is back; resending from seq {self.next}", file=sys.stderr, flush=True)
        return True

    def backlog(self) -> int:
        """Rows the learner has not stored yet."""
        return online_end(self.store) - (self.acked or 0)

    def unsent(self) -> int:
        return online_end(self.store) - self.next

    def push(self, max_messages: int = 4) -> None:
        """Send up to ``max_messages`` batches of rows the learner has not received (or, with none
        left, where this actor's ended episodes end, so the learner can store its last one)."""
        from roborl.robots.transport import PeerUnavailable

        for _ in range(max_messages):
            if not self.connected:
                return
            end = online_end(self.store)
            upto = ended_upto(self.store)
            a = self.next
            if a >= end and (self.acked or 0) >= upto:
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
                rep = self.ch.call("push", {"actor_id": self.actor_id, "first_seq": a, "ended_upto": upto}, arrays)
            except PeerUnavailable as e:
                self._lost(e)
                return
            self._reply(rep.header)
            self.sent += b - a
            if b - a == 0:
                return

    def pull_weights(self, have: int) -> tuple[int, dict[str, Any] | None]:
        from roborl.robots.transport import PeerUnavailable

        if not self.connected or self.remote_version <= have:
            return have, None
        try:
            rep = self.ch.call("weights", {"have": have, "actor_id": self.actor_id})
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
        return [f for f in self.store.field_names if f.split(".")[0] in STREAM_FIELDS + OPTIONAL_STREAM_FIELDS
                and f in names]

    def _stream_arrays(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k in STREAM_FIELDS:
            if k not in rows:
                raise UsageError(f"actor store has no field {k!r}: the split needs flat (Box) observations")
            out[k] = np.ascontiguousarray(rows[k])
        for k in OPTIONAL_STREAM_FIELDS:
            if k in rows:
                out[k] = np.ascontiguousarray(rows[k])
        return out

    def close(self) -> None:
        self.ch.close()


class StreamSink:
    """``env_step``'s sink for one of an actor's vector envs: the store, on that env's stream."""

    def __init__(self, store: Any, stream: str) -> None:
        self.store, self.stream = store, stream

    def add_step(self, **kw: Any) -> None:
        self.store.add_step(**kw, stream=self.stream)


def actor_envs(cfg: Any, env: Any, n: int) -> list[Any]:
    """The actor's envs: the runner's, plus ``n - 1`` more sims built the same way (seeded apart)."""
    if n == 1:
        return [env]
    if cfg.env.id.startswith("robot://") or cfg.intervention.source != "none" or cfg.env.reset_mode == "manual":
        raise UsageError(f"distributed.num_envs={n}: several envs per actor are for sims (not robot://, "
                         f"intervention sources or manual resets)")
    from roborl.envs.config import build_env

    return [env] + [build_env(cfg.env, seed=cfg.run.seed + 7919 * i) for i in range(1, n)]


def act_all(runner: Any, obs: list[Any]) -> list[Any]:
    """One action per env: ``runner.act`` for one env (or before weights arrived: random), else one
    batched policy forward ``learner.act(obs [N, O]) -> [N, A]`` (what ``runner.act`` does per row)."""
    if len(obs) == 1 or not runner.learning_started or isinstance(obs[0], dict):
        return [runner.act(o) for o in obs]
    return list(runner.learner.act(np.stack(obs), deterministic=False).cpu().numpy())


def actor_identity(run_dir: Path, given: str | None) -> str:
    """The actor's id: ``given`` (--actor-id / distributed.actor_id), else the one kept in
    ``run_dir/actor_id`` (made up on the first run). A run dir keeps one identity: its store's rows
    are that actor's stream."""
    import secrets

    from roborl.checkpoint import atomic_write_text

    id_path = Path(run_dir) / "actor_id"
    kept = id_path.read_text().strip() if id_path.exists() else None
    if given is not None:
        why = check_actor_id(given)
        if why:
            raise UsageError(f"--actor-id: {why}")
        if kept is not None and kept != given:
            raise UsageError(f"--actor-id {given}: {run_dir} holds the stream of actor {kept!r}; use that id or "
                             f"another run.dir")
    actor_id = given or kept or secrets.token_hex(8)
    if kept != actor_id:
        atomic_write_text(id_path, actor_id)
    return actor_id


def run_actor(cfg: Any, run_dir: Path, addr: str | None, make_runner: Callable[..., Any]) -> int:
    from roborl.checkpoint import atomic_write_text
    from roborl.envs.step import env_step
    from roborl.robots.transport import parse_hostport, resolve_token

    dcfg: DistributedConfig = cfg.distributed
    if not addr:
        raise UsageError("--role actor needs --learner HOST:PORT")
    host, port = parse_hostport(addr, "--learner")
    if dcfg.actor_id is not None and check_actor_id(dcfg.actor_id):
        raise UsageError(f"--actor-id: {check_actor_id(dcfg.actor_id)}")
    runner = make_runner(cfg, run_dir)  # opens (and flock()s) the run's store: one process per run dir
    link = None
    try:
        actor_id = actor_identity(Path(run_dir), dcfg.actor_id)
        sess_path = Path(run_dir) / "actor_session"
        prev = sess_path.read_text().strip() if sess_path.exists() else None
        store, env = runner.store, runner.env
        assert env is not None
        runner.advance_to(online_end(store))  # the stream position; a restarted actor continues it
        link = ActorLink(store, host, port, resolve_token(None), actor_id, dcfg, prev_session=prev)
        atomic_write_text(sess_path, link.session)  # what this run dir's next process presents
        version = 0
        total = cfg.train.total_steps
        period = 1.0 / dcfg.actor_hz if dcfg.actor_hz else 0.0
        next_t = time.monotonic()
        held_s, steps_disconnected, last_send = 0.0, 0, time.monotonic()
        envs = actor_envs(cfg, env, dcfg.num_envs)
        # One env: the store's default episode. Several: one store stream each (an episode is
        # written whole when it ends), so the partition's rows stay one episode after another.
        streams: list[str | None] = [None] if len(envs) == 1 else [f"env{i}" for i in range(len(envs))]
        resets = store.total_episodes("online")  # reset seeds continue the run's sequence
        obs = []
        for e, sname in zip(envs, streams):
            o, _ = e.reset(seed=cfg.run.seed + resets)
            resets += 1
            store.start_episode(o, partition="online", stream=sname)
            obs.append(o)
        sinks = [store if sname is None else StreamSink(store, sname) for sname in streams]
        t_loop, step0 = time.monotonic(), runner.step
        while runner.step < total and not link.done:
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
            actions = act_all(runner, obs)
            for i, e in enumerate(envs):
                s = env_step(e, obs[i], actions[i], sink=sinks[i])
                runner.advance_to(runner.step + 1)
                if not link.connected:
                    steps_disconnected += 1
                obs[i] = s.next_obs
                if s.done:
                    obs[i], _ = e.reset(seed=cfg.run.seed + resets)
                    resets += 1
                    store.start_episode(obs[i], partition="online", stream=streams[i])
                if runner.step >= total:
                    break
            if link.connected and (link.unsent() >= dcfg.send_every or time.monotonic() - last_send > 1.0):
                link.push()
                last_send = time.monotonic()
        # The last episodes end here (interrupted: they bootstrap), so the learner can store them whole.
        for sname in streams:
            store.end_episode(stream=sname)
        for e in envs[1:]:
            e.close()
        store.commit()
        # Drain the backlog (bounded): the learner may be restarting right now.
        deadline = time.monotonic() + max(30.0, 10 * dcfg.timeout_s)
        while time.monotonic() < deadline and (not link.connected or link.backlog() > 0):
            if link.maybe_connect():
                link.push(max_messages=64)
                if link.backlog() > 0:
                    time.sleep(0.01)
            else:
                time.sleep(0.05)
        unacked = online_end(store) - (link.acked or 0)
        if link.connected and unacked == 0:
            link.bye()
        wall = time.monotonic() - t_loop
        print(json.dumps({"role": "actor", "actor_id": actor_id, "run_dir": str(run_dir), "env_steps": runner.step,
                          "sent": link.sent, "acked": link.acked, "unacked": unacked,
                          "disconnects": link.disconnects, "steps_while_disconnected": steps_disconnected,
                          "held_s": round(held_s, 2), "weights_version": version,
                          "stopped_by_learner": link.done, "steps_this_run": runner.step - step0,
                          "loop_s": round(wall, 3)}), flush=True)
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
