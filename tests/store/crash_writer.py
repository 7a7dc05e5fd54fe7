"""Writer for test_store_crash.py (not a test module).

Runs as a *zygote*: it imports the store once (no zarr I/O, so no threads yet), then for
every line ``<store> <seed> <fsync> <img>`` on stdin forks a writer child that appends to the
store forever and reports on stdout (with os.write, unbuffered):

    pid <pid>                    the child's pid, so the test can SIGKILL it
    ack <partition> <row>        add_step for that row returned (or its buffered episode ended)
    discard <partition> <row>    about to discard the open episode starting at <row>

Every row's content is a pure function of (partition, row), see ``expected_row``, so the
test can check each committed step bit for bit after a crash. ``img`` > 0 makes an image
store: Dict observations {"state": f32[5], "pixels": {"front", "wrist": u8[img, img, 3]}}.
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
CAPACITY = {False: 400, True: 100}  # online steps; image writers are slower, evict sooner


def obs_of(part: str, row: int) -> np.ndarray:
    return (np.arange(5, dtype=np.float32) + np.float32(row) * np.float32(0.5)
            + np.float32(1000.0 if part == "demo" else 0.0))


def spaces(img: int) -> tuple[gym.Space, gym.Space]:
    if not img:
        return OBS, ACT
    cam = gym.spaces.Box(0, 255, (img, img, 3), np.uint8)
    return gym.spaces.Dict({"state": OBS, "pixels": gym.spaces.Dict({"front": cam, "wrist": cam})}), ACT


_BASE: dict[tuple[str, int], np.ndarray] = {}


def frame(cam: str, img: int, part: str, row: int) -> np.ndarray:
    """Camera image of the observation at ``row``: fixed noise (incompressible, like real frames) shifted by row."""
    if (cam, img) not in _BASE:
        _BASE[(cam, img)] = np.random.default_rng(len(cam) * 1000 + img).integers(0, 256, (img, img, 3), np.uint8)
    return _BASE[(cam, img)] + np.uint8((row + (128 if part == "demo" else 0)) % 256)


def full_obs(part: str, row: int, img: int) -> object:
    if not img:
        return obs_of(part, row)
    return {"state": obs_of(part, row), "pixels": {c: frame(c, img, part, row) for c in ("front", "wrist")}}


def expected_row(part: str, row: int, img: int = 0) -> dict[str, np.ndarray]:
    """The values written at logical row ``row`` (obs/next_obs chain across rows by design)."""
    if img:
        return {
            "obs.state": obs_of(part, row), "next_obs.state": obs_of(part, row + 1),
            **{f"obs.pixels.{c}": frame(c, img, part, row) for c in ("front", "wrist")},
            **{f"next_obs.pixels.{c}": frame(c, img, part, row + 1) for c in ("front", "wrist")},
            **{k: v for k, v in expected_row(part, row).items() if not k.endswith("obs")},
        }
    return {
        "obs": obs_of(part, row),
        "next_obs": obs_of(part, row + 1),
        "action": np.array([row % 97, -(row % 89)], np.float32) / np.float32(100.0),
        "reward": np.float32((row % 1000) * 0.25),
        "timestamp": np.float64(row) + 0.125,
    }


def say(msg: str) -> None:
    os.write(1, (msg + "\n").encode())


def writer(path: str, seed: int, fsync: str, img: int = 0) -> None:
    rng = np.random.default_rng(seed)
    obs_space, act_space = spaces(img)
    store = ReplayStore.open_or_create(path, env_id="crash-test", observation_space=obs_space, action_space=act_space,
                                       online_capacity=CAPACITY[bool(img)], chunk_rows=32, fsync=fsync)
    while True:
        part = "demo" if rng.random() < 0.2 else "online"
        buffered = rng.random() < 0.2
        length = int(rng.integers(1, 60))
        discard = rng.random() < 0.1
        p = store.parts[part]
        start = p.end
        store.start_episode(full_obs(part, start, img), part, buffered=buffered)
        for i in range(length):
            row = start + i
            e = expected_row(part, row)
            last = i == length - 1 and not discard
            term = last and rng.random() < 0.5
            store.add_step(action=e["action"], reward=float(e["reward"]), next_obs=full_obs(part, row + 1, img),
                           terminated=term,
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
        path, seed, fsync, img = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                writer(path, int(seed), fsync, int(img))
            finally:
                os._exit(1)
        say(f"pid {pid}")
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
