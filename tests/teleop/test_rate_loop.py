"""RateLoop: absolute schedule, overrun count and worst lateness, honest timestamps."""
from __future__ import annotations

import time

import numpy as np
import pytest

from roborl.errors import UsageError
from roborl.teleop.rate import RateLoop


class ManualClock:
    """A clock that only moves when the loop sleeps or the 'work' advances it."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        assert dt >= 0
        self.t += dt


def test_exact_schedule_and_overruns_with_manual_clock():
    clock = ManualClock()
    loop = RateLoop(10.0, clock=clock, sleep=clock.sleep, wall=lambda: 1000.0)
    stamps = []
    for k in range(10):
        stamps.append(loop.tick())
        clock.t += 0.25 if k in (3, 6) else 0.02  # steps 3 and 6 take 2.5 periods
    st = loop.stats
    assert st.ticks == 10
    assert st.overruns == 2
    assert st.worst_lateness_s == pytest.approx(0.15)
    d = np.diff(stamps)
    # on-time steps are exactly one period apart; an overrun step is as late as its work was
    assert d[0] == pytest.approx(0.1) and d[3] == pytest.approx(0.25) and d[6] == pytest.approx(0.25)
    assert stamps[0] == pytest.approx(1000.0)
    # re-anchored after an overrun: no burst of catch-up ticks
    assert np.all(d >= 0.1 - 1e-9)


def test_no_drift_when_work_is_below_the_period():
    clock = ManualClock()
    loop = RateLoop(50.0, clock=clock, sleep=clock.sleep, wall=lambda: 0.0)
    stamps = [loop.tick()]
    for _ in range(99):
        clock.t += 0.015  # 75% of the 20 ms period: a sleep-after-work loop would run at ~28.6 Hz
        stamps.append(loop.tick())
    assert loop.stats.overruns == 0
    assert stamps[-1] - stamps[0] == pytest.approx(99 * 0.02)
    assert loop.stats.actual_hz == pytest.approx(50.0)


def test_real_clock_slow_step_is_reported():
    """Real sleeps; assertions are lower bounds that hold however loaded the machine is."""
    hz = 50.0
    loop = RateLoop(hz)
    stamps = []
    for k in range(8):
        stamps.append(loop.tick())
        if k in (2, 5):
            time.sleep(3.0 / hz)  # an artificially slow step: 3 periods
    st = loop.stats
    assert st.overruns >= 2
    assert st.worst_lateness_s >= 2.0 / hz - 1e-3
    d = np.diff(stamps)
    assert np.all(d > 0)
    assert d[2] >= 3.0 / hz - 1e-3 and d[5] >= 3.0 / hz - 1e-3
    assert stamps[-1] - stamps[0] >= 7 / hz - 1e-3
    assert "overruns" in st.summary()


def test_bad_rate():
    with pytest.raises(UsageError, match="hz"):
        RateLoop(0)
