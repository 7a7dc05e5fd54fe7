"""Writer for test_store_crash.py (not a test module).

Runs as a *zygote*: it imports the store once (no zarr I/O, so no threads yet), then for
every line ``<store> <seed> <fsync>`` on stdin forks a writer child that appends to the
store forever and reports on stdout (with os.write, unbuffered):

    pid <pid>                    the child's pid, so the test can SIGKILL it
    ack <partition> <row>        add_step for that row returned (or its buffered episode ended)
    discard <partition> <row>    about to discard the open episode starting at <row>

Every row's content is a pure function of (partition, row), see ``expected_row``, so the
test can check each committed step bit for bit after a crash.
"""
from __future__ import annotations

import os
import sys

import gymnasium as gym
import numpy as np
import zarr  # noqa: F401  (imported in the zygote so forked writers start fast)

from roborl.store.store import ReplayStore

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def obs_of(part: str, row: int) -> np.ndarray:
    return (np.arange(5, dtype=np.float32) + np.float32(row) * np.float32(0.5)
            + np.float32(1000.0 if part == "demo" else 0.0))


def expected_row(part: str, row: int) -> dict[str, np.ndarray]:
    """The values written at logical row ``row`` (obs/next_obs chain across rows by design)."""
    return {
        "obs": obs_of(part, row),
        "next_obs": obs_of(part, row + 1),
        "action": np.array([row % 97, -(row % 89)], np.float32) / np.float32(100.0),
        "reward": np.float32((row % 1000) * 0.25),
        "timestamp": np.float64(row) + 0.125,
    }


def say(msg: str) -> None:
    os.write(1, (msg + "\n").encode())


def writer(path: str, seed: int, fsync: str) -> None:
    rng = np.random.default_rng(seed)
    store = ReplayStore.open_or_create(path, env_id="crash-test", observation_space=OBS, action_space=ACT,
                                       online_capacity=400, chunk_rows=32, fsync=fsync)
    while True:
        part = "demo" if rng.random() < 0.2 else "online"
        buffered = rng.random() < 0.2
        length = int(rng.integers(1, 60))
        discard = rng.random() < 0.1
        p = store.parts[part]
        start = p.end
        store.start_episode(obs_of(part, start), part, buffered=buffered)
        for i in range(length):
            row = start + i
            e = expected_row(part, row)
            last = i == length - 1 and not discard
            term = last and rng.random() < 0.5
            store.add_step(action=e["action"], reward=float(e["reward"]), next_obs=e["next_obs"], terminated=term,
                           truncated=last and not term, timestamp=float(e["timestamp"]), is_success=bool(row % 7 == 0))
            if not buffered:
                say(f"ack {part} {row}")
        if discard:
            say(f"discard {part} {start}")
            store.discard_episode()
        elif buffered:
            say(f"ack {part} {start + length - 1}")


def main() -> None:
    for line in sys.stdin:
        path, seed, fsync = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                writer(path, int(seed), fsync)
            finally:
                os._exit(1)
        say(f"pid {pid}")
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
