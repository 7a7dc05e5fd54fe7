"""Micro-benchmark of the server's per-command path; prints one JSON line.

    PYTHONPATH=$PWD python tests/robots/bench_server_path.py

``decode_step_us``: decoding one ``step`` request (header + a [4] float32 action);
``guard_us``: the server-side action check on the sim twin of roborl/Reach-v0 (the clip-only
``ActionGuard`` of older versions, or :class:`~roborl.robots.limits.LimitGuard`: clip,
workspace, max step, joint velocities). Runs against whichever roborl is on PYTHONPATH, so the
same file measures an older checkout side by side.
"""
from __future__ import annotations

import json
import timeit

import numpy as np

from roborl.robots import transport as T
from roborl.robots.sim import SimRobot


def main(n: int = 20_000) -> None:
    frames = T.encode({"type": "step", "seq": 7, "session": "abcdef0123456789", "token": "s3cret"},
                      {"action": np.array([0.3, -0.2, 0.1, 1.0], np.float32)})
    t_dec = min(timeit.repeat(lambda: T.decode(frames), number=n, repeat=5)) / n * 1e6
    robot = SimRobot("roborl/Reach-v0")
    robot.connect()
    state = robot.reset(seed=0)
    action = np.array([0.3, -0.2, 0.1, 1.0], np.float32)
    try:
        from roborl.robots.limits import LimitGuard

        guard = LimitGuard(robot, robot.control_hz)
        ee = state.info["ee_pos"]
        call, kind = (lambda: guard(action, ee)), "LimitGuard"
    except ImportError:  # an older checkout
        from roborl.robots.server import ActionGuard  # type: ignore[attr-defined]

        old = ActionGuard(robot)
        call, kind = (lambda: old(action)), "ActionGuard"
    t_guard = min(timeit.repeat(call, number=n // 4, repeat=5)) / (n // 4) * 1e6
    robot.disconnect()
    print(json.dumps({"decode_step_us": round(t_dec, 2), "guard": kind, "guard_us": round(t_guard, 2)}))


if __name__ == "__main__":
    main()
