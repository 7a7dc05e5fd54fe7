"""kill -9 crash test: a writer subprocess is SIGKILLed at random moments.

After every trial: the store verifies read-only *before* recovery (the committed state is
always consistent), a writable open recovers it, every acknowledged step is present
(loss <= the step being written), every stored step reads back bit-identical, and verify
passes with no warnings. The same store is carried across trials, so recovery after
recovery, eviction, discards, buffered episodes and both partitions are all exercised.
"""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from roborl.store import ReplayStore
from roborl.store.verify import verify_store

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import expected_row  # noqa: E402

WRITER = Path(__file__).parent / "crash_writer.py"
TRIALS = 22
IMAGE_TRIALS = 8


class _Lines:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def read(self, timeout: float, first: bool = False) -> list[str]:
        """Complete lines arriving within ``timeout`` seconds (``first``: return at the first line)."""
        out: list[str] = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            r, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.buf += chunk
                *lines, self.buf = self.buf.split(b"\n")
                out.extend(line.decode() for line in lines)
            if left <= 0 or (first and out):
                break
        return out


def _check_rows(st: ReplayStore, part: str, img: int = 0) -> int:
    eps = st.episodes(part)  # type: ignore[arg-type]
    if not len(eps):
        return st.parts[part].head_row
    s0, s1 = int(eps[0, 0]), int(eps[-1, 0] + eps[-1, 1])
    data = st.read_rows(part, s0, s1)  # type: ignore[arg-type]
    exp = [expected_row(part, r, img) for r in range(s0, s1)]
    obs_names = ["obs", "next_obs"] if not img else [f"{w}.{k}" for w in ("obs", "next_obs")
                                                      for k in ("state", "pixels.front", "pixels.wrist")]
    for name in obs_names + ["action", "reward", "timestamp"]:
        want = np.stack([e[name] for e in exp])
        got = data[name]
        assert got.dtype == want.dtype
        bad = np.flatnonzero(np.any((got != want).reshape(len(got), -1), axis=1))
        assert not len(bad), f"{part} row {s0 + bad[0]} field {name}: {got[bad[0]]} != {want[bad[0]]}"
    assert np.array_equal(data["executed_action"], data["action"])
    # Interrupted or not, every episode is a contiguous run of rows whose obs chain holds.
    for name in obs_names[: len(obs_names) // 2]:
        assert np.array_equal(data["next_" + name][:-1], data[name][1:])
    return s1


def test_kill9_random_moments(tmp_path: Path) -> None:
    _kill9_trials(tmp_path, img=0, trials=TRIALS, min_acked=200)
    with ReplayStore.open(tmp_path / "store", mode="r") as st:
        assert st.num_episodes("online") > 0 and st.num_episodes("demo") > 0
        assert st.parts["online"].head_ep > 0, "eviction should have happened"


@pytest.mark.parametrize("img", [64, 128])
def test_kill9_image_store(tmp_path: Path, img: int) -> None:
    """The same guarantees for a frames-once image store: two uint8 cameras at 64x64 and 128x128."""
    _kill9_trials(tmp_path, img=img, trials=IMAGE_TRIALS, min_acked=50)
    with ReplayStore.open(tmp_path / "store", mode="r") as st:
        assert st.num_episodes("online") > 0
        assert st.frames_once and "next_obs.pixels.front" not in [f.name for f in st.stored_fields]


def _kill9_trials(tmp_path: Path, img: int, trials: int, min_acked: int) -> None:
    path = tmp_path / "store"
    zyg = subprocess.Popen([sys.executable, str(WRITER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           cwd=str(Path(__file__).parents[2]))
    lines = _Lines(zyg.stdout.fileno())  # type: ignore[union-attr]
    rng = random.Random(20240503)
    acked_end = {"demo": 0, "online": 0}
    total_acked = 0
    try:
        for trial in range(trials):
            fsync = "commit" if trial % 4 == 1 else "never"
            zyg.stdin.write(f"{path} {trial} {fsync} {img}\n".encode())  # type: ignore[union-attr]
            zyg.stdin.flush()  # type: ignore[union-attr]
            got = lines.read(60.0, first=True)
            while not got or not got[0].startswith("pid "):
                more = lines.read(60.0, first=True)
                assert more, f"trial {trial}: writer did not start"
                got += more
            pid = int(got[0].split()[1])
            msgs = got[1:] + lines.read(rng.uniform(0.05, 1.0))
            os.kill(pid, signal.SIGKILL)
            msgs += lines.read(0.2)  # acks written before death are still in the pipe
            for m in msgs:
                kind, part, row = m.split()
                if kind == "ack":
                    acked_end[part] = max(acked_end[part], int(row) + 1)
                    total_acked += 1
                elif kind == "discard":
                    acked_end[part] = min(acked_end[part], int(row))
            if not path.exists():
                # Killed while creating: the store appears atomically, so nothing is there yet.
                assert total_acked == 0 and not any(p.name == "store" for p in tmp_path.iterdir())
                continue
            # The committed state is consistent even before recovery (read-only, no writes).
            pre = verify_store(path)
            assert pre["ok"], f"trial {trial}: before recovery: {pre['problems']}"
            with ReplayStore.open(path, mode="a") as st:
                for part in ("demo", "online"):
                    end = _check_rows(st, part, img)
                    assert end >= acked_end[part], (
                        f"trial {trial}: {part} lost acknowledged steps: store ends at row {end}, "
                        f"acked up to {acked_end[part]} (recovered: {st.recovered})")
            post = verify_store(path)
            assert post["ok"] and not post["warnings"], f"trial {trial}: {post}"
    finally:
        zyg.stdin.close()  # type: ignore[union-attr]
        zyg.wait(timeout=30)
    assert total_acked > min_acked, "the writer should have made progress across the trials"
