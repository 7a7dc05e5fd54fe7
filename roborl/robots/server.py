"""The robot server: runs next to the hardware and owns the fixed-rate control loop.

One thread, one ROUTER socket. The loop sleeps in ``poll`` until the next tick, handles
requests as they arrive, and at every tick (period ``1/hz``):

1. **watchdog**: if no valid ``step`` arrived since the last tick, the idle counter grows;
   at 2 control periods without a valid command the robot is told to :meth:`~Robot.hold`
   (one repeat of the last command is tolerated, as jitter), the event is counted, logged
   on stderr and reported in the next reply (``info["watchdog"]``) and in ``stats``;
2. ``robot.tick()`` executes one period and reads the state;
3. the client whose command was applied during this period gets its reply (the state
   *after* its action, as ``env.step`` would return). Rewards of ticks that carried no
   reply (a late client on the realtime twin) are summed into the next one.

Commands are applied on arrival (lowest latency) after the **server-side limits**
(:class:`~roborl.robots.limits.LimitGuard`, for every backend, even if the client skipped its
own safety layer): wrongly shaped actions are rejected (the command is not valid, so the
watchdog keeps counting); non-finite ones become a hold; the rest is clipped into the action
box, projected into the robot's declared workspace and limited to its maximum step and joint
velocities. ``info["executed_action"]`` in the step reply is what the adapter was sent
(null: the adapter's own hold) and ``info["safety"]`` what was changed. When the adapter
keeps executing a command on later periods (``holds_last_command``), the server re-checks it
against the limits before each such period.

Every message is handled inside its own error boundary: the token is checked before any
array is decoded, the header parser bounds size and nesting depth, array shapes are checked
in overflow-free integers, and whatever still goes wrong becomes an ``error`` reply to that
message (``internal``, counted) while the loop keeps serving.

Requests (``type``): ``hello`` (spaces, rate, limits), ``reset`` (claims control of the
robot), ``step`` (action [act_dim]), ``observe``, ``estop``, ``stats``, ``ping``. Only the
session that last reset may ``step``. A repeated ``seq`` is answered from the reply cache,
never executed twice. Malformed messages, unknown types and requests without the right
token get an ``error`` reply and the loop keeps serving. Binding to anything but
loopback requires a token. Latency and jitter statistics: :meth:`RobotServer.stats`.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import zmq

from roborl.config import field, positive
from roborl.errors import UsageError
from roborl.robots import Robot, RobotState
from roborl.robots.blind import (EpisodeLog, blind_observation_space, blind_state, check_blind_observation,
                                  privileged_info_keys, privileged_obs_keys)
from roborl.robots.limits import LimitGuard
from roborl.robots.transport import (Message, MessageError, bind_router, check_token, decode_arrays, decode_header,
                                     encode, error_reply, is_loopback, jsonable, obs_to_arrays, router_recv,
                                     router_send, space_to_json)

REQUEST_TYPES = ("hello", "reset", "step", "observe", "estop", "stats", "ping")
WATCHDOG_PERIODS = 2


@dataclass(frozen=True)
class ServerConfig:
    """How the robot server listens and paces its loop."""

    host: str = field("127.0.0.1", doc="Address to bind. Anything but loopback requires a token.")
    port: int = field(5555, doc="TCP port.", check=lambda v: None if 0 < v < 65536 else "must be in 1..65535")
    token: str | None = field(None, doc="Shared secret every request must carry (required off loopback).")
    hz: float | None = field(None, doc="Control rate; null = the robot's own control_hz.", check=positive)
    stats_window: int = field(10_000, doc="Samples kept for latency/jitter percentiles.", check=positive)
    log: bool = field(True, doc="Log watchdog and e-stop events on stderr.")
    blind: bool = field(False, doc="Serve what a real arm gives: reward 0, no success flag, allow-listed info only.")
    log_dir: str | None = field(None, doc="Directory for the server's true per-episode log (episodes.jsonl).")

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"host {self.host!r} is not loopback: a token is required (--token or "
                             f"$ROBORL_ROBOT_TOKEN)")


def _pct(values: collections.deque, scale: float = 1e3) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.fromiter(values, dtype=np.float64) * scale
    return {"p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
            "max": round(float(a.max()), 4), "n": int(a.size)}


@dataclass
class _Session:
    envelope: list[bytes]
    last_seq: int = -1
    last_reply: list[bytes] | None = None


@dataclass
class _Pending:
    session: str
    seq: int
    t_recv: float
    modified: bool
    executed: list[float] | None    # the command sent to the adapter (None: the adapter's own hold)
    events: dict[str, int]


class RobotServer:
    """Serve ``robot`` on ``cfg.host:cfg.port``. ``serve()`` blocks until :meth:`stop` (or ``max_seconds``)."""

    def __init__(self, robot: Robot, cfg: ServerConfig, backend: str = "?") -> None:
        self.robot = robot
        self.cfg = cfg
        self.backend = backend
        self.hz = float(cfg.hz or robot.control_hz)
        self.period = 1.0 / self.hz
        # The joint-velocity check needs the period over which one command's motion happens: the
        # robot's own control period (ee_scale is defined per it), not a --hz override.
        self.guard = LimitGuard(robot, float(robot.control_hz))
        self.ee: Any = None                          # the robot's last reported info["ee_pos"] [3]
        self.last_action: np.ndarray | None = None   # the client's last command, as received
        self.last_sent: np.ndarray | None = None     # what the adapter is executing
        self.repeats = bool(getattr(robot, "holds_last_command", True))
        # What clients see: a Box, or a (nested) Dict of Boxes (proprio + uint8 camera images); the
        # blind server drops the privileged entries (object/goal state) from it and every observation.
        self.obs_space = robot.observation_space
        self._priv_obs: tuple[str, ...] = ()
        self._priv_info: tuple[str, ...] = ()
        if cfg.blind:
            check_blind_observation(robot, backend)
            self._priv_obs, self._priv_info = privileged_obs_keys(robot), privileged_info_keys(robot)
            self.obs_space = blind_observation_space(robot.observation_space, self._priv_obs)
        try:
            self._spaces_json = {"observation_space": space_to_json(self.obs_space),
                                 "action_space": space_to_json(robot.action_space)}
        except MessageError as e:
            raise UsageError(f"--backend {backend!r}: {e}") from None
        self.episodes = EpisodeLog(cfg.log_dir) if cfg.log_dir else None
        self._stop = threading.Event()
        self.sock: zmq.Socket | None = None
        # control state
        self.owner: str | None = None
        self.sessions: dict[str, _Session] = {}
        self.pending: _Pending | None = None
        self.fresh = False
        self.armed = False          # watchdog armed after the first step of an episode
        self.idle = 0
        self.holding = False
        self.estopped = False
        self.episode_active = False
        self.acc_reward = 0.0
        self.acc_done = (False, False)
        self.held_ticks_since_reply = 0
        self.tick_index = 0
        # statistics
        w = cfg.stats_window
        self.jitter = collections.deque(maxlen=w)        # actual - scheduled tick time [s]
        self.intervals = collections.deque(maxlen=w)     # time between ticks [s]
        self.cmd_latency = collections.deque(maxlen=w)   # step received -> reply sent [s]
        self.counts = collections.Counter()
        self.t_start = time.monotonic()
        self._last_tick_t: float | None = None
        self._log_state: dict[str, tuple[float, int]] = {}

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        self._stop.set()

    def log(self, msg: str, kind: str = "") -> None:
        """One line on stderr. Lines of one ``kind`` are rate-limited to one per second (with a count
        of those left out): the control loop writes them, and a flapping client must neither flood
        the log nor block the loop on a slow or full stderr pipe."""
        if not self.cfg.log:
            return
        if kind:
            now = time.monotonic()
            last, skipped = self._log_state.get(kind, (-1e9, 0))
            if now - last < 1.0:
                self._log_state[kind] = (last, skipped + 1)
                return
            self._log_state[kind] = (now, 0)
            if skipped:
                msg += f" (and {skipped} more such events in the last second)"
        print(f"roborl robot: {msg}", file=sys.stderr, flush=True)

    def serve(self, max_seconds: float | None = None, ready: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run the loop; returns the final statistics. The caller owns ``robot`` (connect/disconnect)."""
        self.sock = bind_router(self.cfg.host, self.cfg.port, "roborl robot serve")
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        end = None if max_seconds is None else time.monotonic() + max_seconds
        self.t_start = time.monotonic()
        next_tick = self.t_start + self.period
        if ready is not None:
            ready()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                remaining = next_tick - now
                if remaining >= 0.001:
                    # Wake at most every 100 ms to notice stop(); ms granularity (zmq_poll).
                    if poller.poll(min(int(remaining * 1000), 100)):
                        self._drain(next_tick)
                    continue
                if remaining > 0:
                    time.sleep(remaining)  # sub-millisecond wait: finer than zmq_poll
                # Commands that arrived in the last instant still count (bounded: a flood may
                # delay this tick by at most a fifth of a period).
                self._drain(next_tick + 0.2 * self.period)
                now = time.monotonic()
                self._tick(now, next_tick)
                next_tick += self.period
                behind = time.monotonic() - next_tick
                if behind > 0:
                    # Overrun: skip the missed ticks instead of bursting to catch up.
                    missed = int(behind // self.period) + 1
                    self.counts["overruns"] += missed
                    next_tick += missed * self.period
                if self._reanchor:
                    next_tick = time.monotonic() + self.period
                    self._reanchor = False
        finally:
            try:
                self.robot.hold()
            finally:
                self.sock.close(0)
                self.sock = None
                if self.episodes is not None:
                    self.episodes.close()
        return self.stats()

    _reanchor = False

    # ------------------------------------------------------------------ requests
    def _drain(self, until: float | None = None, budget: int = 256) -> None:
        """Handle waiting requests; stop after ``budget`` or once ``until`` (the next tick) is due, so
        a flood of messages delays the control loop by at most one message."""
        assert self.sock is not None
        for _ in range(budget):
            try:
                envelope, frames = router_recv(self.sock)
            except zmq.Again:
                return
            except zmq.ZMQError:
                self.counts["recv_errors"] += 1
                return
            self._handle(envelope, frames)
            if until is not None and time.monotonic() >= until:
                return

    def _reply(self, envelope: list[bytes], frames: list[bytes], session: str | None = None, seq: int = -1) -> None:
        assert self.sock is not None
        if session is not None and session in self.sessions:
            s = self.sessions[session]
            s.last_seq, s.last_reply = seq, frames
        if not router_send(self.sock, envelope, frames):
            self.counts["replies_dropped"] += 1

    def _refuse(self, envelope: list[bytes], header: dict | None, code: str, message: str) -> None:
        self.counts[f"refused_{code}"] += 1
        self._reply(envelope, error_reply(header, code, message))

    def _handle(self, envelope: list[bytes], frames: list[bytes]) -> None:
        """One request -> one reply (or a deliberate silence for a duplicate). Never raises:
        whatever goes wrong while handling this message becomes an ``error`` reply to it."""
        header: dict | None = None
        try:
            try:
                header = decode_header(frames)
            except MessageError as e:
                return self._refuse(envelope, None, "malformed", f"malformed message: {e}")
            # The token is checked before any array frame is decoded: an unauthenticated peer
            # only ever reaches the bounded header parser.
            if not check_token(header, self.cfg.token):
                return self._refuse(envelope, header, "unauthorized", "missing or wrong token")
            try:
                msg = Message(header, decode_arrays(header, frames))
            except MessageError as e:
                return self._refuse(envelope, header, "malformed", f"malformed message: {e}")
            self._dispatch(envelope, msg)
        except Exception as e:  # noqa: BLE001 - the loop must keep serving whatever one message does
            self.counts["internal_errors"] += 1
            self.log(f"error while handling a message ({type(e).__name__}); answered with an error reply", "internal")
            try:
                self._reply(envelope, error_reply(header, "internal", f"server error ({type(e).__name__})"))
            except Exception:  # noqa: BLE001 - even the reply failed: drop it
                self.counts["replies_dropped"] += 1

    def _dispatch(self, envelope: list[bytes], msg: Message) -> None:
        h = msg.header
        if msg.type not in REQUEST_TYPES:
            return self._refuse(envelope, h, "bad_type", f"unknown message type {msg.type[:64]!r}; expected one of "
                                                         f"{list(REQUEST_TYPES)}")
        session = h.get("session") or ""
        sess = self.sessions.get(session)
        if sess is not None:
            sess.envelope = envelope  # the client may have reconnected with a new socket
            if msg.seq == sess.last_seq and sess.last_reply is not None:
                self.counts["resends_answered"] += 1
                return self._reply(envelope, sess.last_reply)
            if self.pending is not None and self.pending.session == session and msg.seq == self.pending.seq:
                return  # the same step is already applied; its reply comes at the tick
            if msg.seq < sess.last_seq:
                return  # stale duplicate of an old call: the client has moved on
        else:
            if len(self.sessions) > 1000:  # bounded: forget the oldest sessions
                for k in list(self.sessions)[:500]:
                    if k != self.owner:
                        del self.sessions[k]
            sess = self.sessions[session] = _Session(envelope)
        self.counts[f"req_{msg.type}"] += 1
        try:
            getattr(self, f"_on_{msg.type}")(msg, session, envelope)
        except MessageError as e:
            self._refuse(envelope, h, "rejected", str(e))

    def _state_reply(self, type_: str, seq: int, state: RobotState, extra: dict[str, Any] | None = None) -> list[bytes]:
        if self.cfg.blind:
            state = blind_state(state, self._priv_obs, self._priv_info)
        header = {"type": type_, "seq": seq, "reward": float(state.reward), "terminated": bool(state.terminated),
                  "truncated": bool(state.truncated), "info": jsonable(state.info) or {}}
        header.update(extra or {})
        return encode(header, obs_to_arrays(state.obs, self.obs_space))

    def _on_ping(self, msg, session, envelope) -> None:
        self._reply(envelope, encode({"type": "pong", "seq": msg.seq, "time": time.time()}), session, msg.seq)

    def _on_hello(self, msg, session, envelope) -> None:
        r = self.robot
        self._reply(envelope, encode({
            "type": "hello", "seq": msg.seq, "backend": self.backend, "control_hz": self.hz,
            "action_mode": r.action_mode, "max_episode_steps": r.max_episode_steps,
            **self._spaces_json, "watchdog_periods": WATCHDOG_PERIODS,
            "token_required": bool(self.cfg.token), "blind": self.cfg.blind,
            "limits": dataclasses.asdict(self.guard.limits) if self.guard.limits is not None else None}),
            session, msg.seq)

    def _on_reset(self, msg, session, envelope) -> None:
        seed = msg.header.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise MessageError("reset 'seed' must be an integer >= 0 or null")
        if self.pending is not None:  # a step of the previous owner that never got its tick
            self._answer_pending_error("superseded", "the robot was reset by a client")
        state = self._note(self.robot.reset(seed=seed))
        if self.episodes is not None:
            self.episodes.start(seed, session)
        self.last_action = self.last_sent = None
        self.guard.new_episode()
        self.owner = session
        self.estopped = False
        self.episode_active = True
        self.armed = self.holding = False
        self.idle = 0
        self.fresh = False
        self.acc_reward, self.acc_done, self.held_ticks_since_reply = 0.0, (False, False), 0
        self._reanchor = True  # homing took time: start the tick schedule afresh
        self._last_tick_t = None
        self._reply(envelope, self._state_reply("reset", msg.seq, state), session, msg.seq)

    def _on_step(self, msg, session, envelope) -> None:
        if session != self.owner:
            raise MessageError("this client does not control the robot; send reset first")
        if self.estopped:
            raise MessageError("robot is e-stopped; send reset to clear it")
        if self.pending is not None:
            raise MessageError("a step is already pending for this control period")
        if "action" not in msg.arrays:
            raise MessageError("step needs an 'action' array")
        if not self.episode_active:
            # Episode already over (e.g. the realtime twin timed out while the client was away).
            state = self.robot.observe()
            self._reply(envelope, self._state_reply("step", msg.seq, state, self._step_extra(applied=False)),
                        session, msg.seq)
            return
        action = msg.arrays["action"]
        try:
            cmd, events = self.guard(action, self.ee)
        except MessageError as e:
            self.counts["actions_rejected"] += 1
            raise MessageError(f"action rejected by the server safety layer: {e}") from None
        self._send(cmd)
        self.last_action = np.array(action)
        modified = any(events.values())
        if modified:
            self.counts["actions_modified"] += 1
            for k, v in events.items():
                if v:
                    self.counts[f"safety_{k}"] += 1
        self.fresh = True
        self.armed = True
        if self.holding:
            self.holding = False
        self.pending = _Pending(session, msg.seq, time.monotonic(), modified,
                                None if cmd is None else [float(v) for v in cmd.reshape(-1)], events)

    def _send(self, cmd: np.ndarray | None) -> None:
        """The only path from a client's command to the adapter (after :class:`LimitGuard`)."""
        if cmd is None:
            self.robot.hold()
        else:
            self.robot.send_action(cmd)
        self.guard.executed(cmd)
        self.last_sent = cmd

    def _note(self, state: RobotState) -> RobotState:
        """Remember the reported end-effector position (the workspace projection starts from it)."""
        info = state.info if isinstance(state.info, dict) else {}
        self.ee = info.get("ee_pos")
        return state

    def _on_observe(self, msg, session, envelope) -> None:
        try:
            state = self._note(self.robot.observe())
        except UsageError as e:
            raise MessageError(str(e)) from None
        self._reply(envelope, self._state_reply("observe", msg.seq, state,
                                                {"holding": self.holding, "estopped": self.estopped,
                                                 "tick": self.tick_index}), session, msg.seq)

    def _on_estop(self, msg, session, envelope) -> None:
        self.robot.estop()
        self.estopped = True
        self.counts["estops"] += 1
        self.log("E-STOP latched; send reset to clear")
        if self.pending is not None:
            self._answer_pending_error("estopped", "robot was e-stopped")
        self._reply(envelope, encode({"type": "estop", "seq": msg.seq}), session, msg.seq)

    def _on_stats(self, msg, session, envelope) -> None:
        self._reply(envelope, encode({"type": "stats", "seq": msg.seq, "stats": self.stats()}), session, msg.seq)

    def _answer_pending_error(self, code: str, message: str) -> None:
        p = self.pending
        self.pending = None
        if p is None:
            return
        sess = self.sessions.get(p.session)
        if sess is not None:
            self._reply(sess.envelope, error_reply({"seq": p.seq}, code, message), p.session, p.seq)

    # ------------------------------------------------------------------ the control loop
    def _step_extra(self, applied: bool) -> dict[str, Any]:
        return {"applied": applied, "tick": self.tick_index, "watchdog": self.held_ticks_since_reply > 0,
                "held_ticks": self.held_ticks_since_reply}

    def _tick(self, now: float, scheduled: float) -> None:
        self.tick_index += 1
        self.counts["ticks"] += 1
        self.jitter.append(max(0.0, now - scheduled))
        if self._last_tick_t is not None:
            self.intervals.append(now - self._last_tick_t)
        self._last_tick_t = now
        if not self.episode_active:
            return
        # 1. watchdog
        if self.fresh:
            self.idle = 0
        elif self.armed and not self.estopped:
            self.idle += 1
            if self.idle >= WATCHDOG_PERIODS and not self.holding:
                self.robot.hold()
                self.holding = True
                self.counts["watchdog_events"] += 1
                self.log(f"watchdog: no valid command for {WATCHDOG_PERIODS} control periods "
                         f"({WATCHDOG_PERIODS * self.period * 1e3:.0f} ms); holding the robot", "watchdog")
            if self.holding:
                self.counts["watchdog_held_ticks"] += 1
                self.held_ticks_since_reply += 1
            elif self.repeats and self.last_action is not None:
                self._recheck()
        self.fresh = False
        # 2. one control period
        state = self._note(self.robot.tick())
        if self.episodes is not None:
            self.episodes.tick(state)
        self.acc_reward += state.reward
        self.acc_done = (self.acc_done[0] or state.terminated, self.acc_done[1] or state.truncated)
        if state.terminated or state.truncated:
            self.episode_active = False
        # 3. reply to the command applied during this period
        p = self.pending
        if p is not None:
            self.pending = None
            sess = self.sessions.get(p.session)
            info = dict(state.info) if isinstance(state.info, dict) else {}
            info["executed_action"] = p.executed
            info["safety"] = p.events
            out = RobotState(state.obs, self.acc_reward, self.acc_done[0], self.acc_done[1], info)
            extra = self._step_extra(applied=True)
            extra["safety_modified"] = p.modified
            self.acc_reward, self.acc_done, self.held_ticks_since_reply = 0.0, (False, False), 0
            if sess is not None:
                self._reply(sess.envelope, self._state_reply("step", p.seq, out, extra), p.session, p.seq)
                self.cmd_latency.append(time.monotonic() - p.t_recv)
                self.counts["steps"] += 1

    def _recheck(self) -> None:
        """The adapter is about to execute its last command again (velocity-like hardware): re-check it
        against the limits from where the arm is now, and send the corrected command if it changed."""
        cmd, _ = self.guard(self.last_action, self.ee)
        same = (cmd is None and self.last_sent is None) or (
            cmd is not None and self.last_sent is not None and np.array_equal(cmd, self.last_sent))
        if not same:
            self._send(cmd)
            self.counts["commands_rechecked"] += 1

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Latency/jitter percentiles (ms) and event counts since start."""
        up = time.monotonic() - self.t_start
        iv = np.fromiter(self.intervals, dtype=np.float64) if self.intervals else np.zeros(0)
        return {
            "backend": self.backend, "hz": self.hz, "uptime_s": round(up, 3),
            "achieved_tick_hz": round(float(1.0 / iv.mean()), 2) if iv.size else None,
            "tick_interval_std_ms": round(float(iv.std() * 1e3), 4) if iv.size else None,
            "tick_jitter_ms": _pct(self.jitter),
            "step_latency_ms": _pct(self.cmd_latency),
            "holding": self.holding, "estopped": self.estopped,
            "counts": dict(sorted(self.counts.items())),
        }
