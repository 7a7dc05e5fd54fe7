"""Fixed-rate control loop with honest timestamps and overrun reporting.

Recording loops that sleep a fixed ``1/hz`` *after* the work drift below their rate by the
work's duration (LeRobot PR #2786). :class:`RateLoop` keeps an absolute schedule instead:
tick ``k`` is due at ``t0 + k/hz``. When a step overruns its slot (the next deadline has
already passed when ``tick()`` is called) the overrun is counted, its lateness recorded,
and the schedule re-anchored at "now" (no burst of catch-up steps, which would feed the
robot a train of stale commands). Every tick returns the wall-clock time it actually
started, so stored timestamps show the true rate, overruns included.

Usage::

    loop = RateLoop(10.0)
    while running:
        t = loop.tick()      # waits for the next slot; t = wall-clock seconds of this step
        ...one control step, stored with timestamp=t...
    print(loop.stats.summary())
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from roborl.errors import UsageError


@dataclass(frozen=True)
class RateStats:
    """Loop timing so far.

    overruns: steps whose work ran past the next deadline.
    worst_lateness_s: the largest such lateness (seconds past the deadline).
    max_jitter_s: the largest wake-up delay of an on-time tick (sleep imprecision).
    actual_hz: (ticks - 1) / (last tick time - first tick time).
    """

    hz: float
    ticks: int
    overruns: int
    worst_lateness_s: float
    max_jitter_s: float
    actual_hz: float

    def summary(self) -> str:
        return (f"{self.ticks} steps at {self.actual_hz:.2f} Hz (target {self.hz:g}), {self.overruns} overruns, "
                f"worst lateness {self.worst_lateness_s * 1e3:.1f} ms")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RateLoop:
    """Runs a loop at ``hz`` on an absolute schedule.

    ``clock``: monotonic seconds (scheduling); ``sleep``: the sleep function; ``wall``: the
    wall clock used for the returned timestamps (anchored once, then advanced by ``clock``
    so timestamps are monotonic even if NTP steps the wall clock).
    """

    def __init__(self, hz: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, wall: Callable[[], float] = time.time) -> None:
        if not hz > 0:
            raise UsageError(f"hz: must be > 0, got {hz!r}")
        self.hz = float(hz)
        self.period = 1.0 / self.hz
        self._clock, self._sleep, self._wall = clock, sleep, wall
        self._deadline: float | None = None
        self._mono0 = 0.0
        self._wall0 = 0.0
        self._first = 0.0
        self._last = 0.0
        self.ticks = 0
        self.overruns = 0
        self.worst_lateness_s = 0.0
        self.max_jitter_s = 0.0

    def reset_schedule(self) -> None:
        """Re-anchor the next tick at "now" without counting an overrun (e.g. after a pause
        such as waiting for the operator's decision, which has no deadline)."""
        self._deadline = None

    def tick(self) -> float:
        """Wait for the next slot; return its wall-clock timestamp (seconds since the epoch)."""
        now = self._clock()
        if self.ticks == 0:
            self._mono0, self._wall0 = now, self._wall()
            self._first = now
        if self._deadline is None:
            self._deadline = now
        else:
            self._deadline += self.period
            if now > self._deadline:
                # The previous step's work overran its slot: count it, don't catch up.
                lateness = now - self._deadline
                self.overruns += 1
                self.worst_lateness_s = max(self.worst_lateness_s, lateness)
                self._deadline = now
            else:
                self._sleep(self._deadline - now)
                now = self._clock()
                self.max_jitter_s = max(self.max_jitter_s, now - self._deadline)
        self.ticks += 1
        self._last = now
        return self._wall0 + (now - self._mono0)

    @property
    def stats(self) -> RateStats:
        span = self._last - self._first
        actual = (self.ticks - 1) / span if self.ticks > 1 and span > 0 else 0.0
        return RateStats(hz=self.hz, ticks=self.ticks, overruns=self.overruns, worst_lateness_s=self.worst_lateness_s,
                         max_jitter_s=self.max_jitter_s, actual_hz=actual)
