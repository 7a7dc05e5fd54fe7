"""Per-stream episodes (one writer, one open episode per actor): each is written whole, its
stream's row count persists with it, and kill -9 at random moments loses nothing a writer
acknowledged and stores nothing twice."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from roborl.store import ReplayStore
from roborl.store.schema import StoreError
from roborl.store.verify import verify_store

sys.path.insert(0, str(Path(__file__).parent))
from stream_writer import ACT, OBS, row_obs  # noqa: E402

WRITER = Path(__file__).parent / "stream_writer.py"


def _step(st: ReplayStore, s: str, i: int, q: int, end: bool = False) -> None:
    st.add_step(action=np.zeros(2, np.float32), reward=float(q), next_obs=row_obs(i, q + 1), terminated=end,
                truncated=False, stream=s)


def _check_streams(st: ReplayStore, names: list[str]) -> dict[str, int]:
    """Every stream's rows are exactly seqs [0, stream_rows), once each, in whole episodes of one
    stream, with the content the writer gave them. Returns {stream: rows}."""
    n = st.end_row("online")
    rows = st.read_rows("online", 0, n, ["obs", "next_obs", "reward"]) if n else {"obs": np.zeros((0, 3))}
    for s0, length, _ in st.episodes("online"):
        ids = rows["obs"][s0: s0 + length, 0]
        assert (ids == ids[0]).all(), "an episode mixes streams"
        seqs = rows["obs"][s0: s0 + length, 1]
        np.testing.assert_array_equal(np.diff(seqs), 1)  # contiguous within its stream
    assert st.num_steps("online") == n  # every row belongs to an ended episode
    out = {}
    for i, s in enumerate(names):
        sel = rows["obs"][:, 0] == i
        seqs = np.sort(rows["obs"][sel, 1].astype(np.int64))
        np.testing.assert_array_equal(seqs, np.arange(st.stream_rows(s)), err_msg=s)  # no loss, no duplicate
        for k, (o, no, r) in enumerate(zip(rows["obs"][sel], rows["next_obs"][sel], rows["reward"][sel])):
            q = int(o[1])
            np.testing.assert_array_equal(o, row_obs(i, q))
            np.testing.assert_array_equal(no, row_obs(i, q + 1))
            assert r == q
        out[s] = st.stream_rows(s)
    return out


def test_streams_interleave_and_each_episode_is_written_whole(tmp_path: Path) -> None:
    st = ReplayStore.create(tmp_path / "s", env_id="x", observation_space=OBS, action_space=ACT, chunk_rows=8)
    names = ["a", "b", "c"]
    for i, s in enumerate(names):
        st.start_episode(row_obs(i, 0), stream=s)
    for q in range(20):
        for i, s in enumerate(names):
            if q < 5 * (i + 1):
                _step(st, s, i, q, end=q == 5 * (i + 1) - 1)
    # a and b ended (5 and 10 rows), c is open with 15 rows in memory: not in the partition yet
    assert st.streams() == {"a": 5, "b": 10, "c": 15}
    st.start_episode(row_obs(0, 5), stream="a")
    _step(st, "a", 0, 5)
    assert st.stream_open_rows("a") == 1 and st.open_streams() == ["a"]
    with pytest.raises(StoreError, match="open stream episodes"):
        st.start_episode(row_obs(9, 0))  # the default episode would interleave with a's
    with pytest.raises(StoreError, match="before merging"):
        st.merge_from(tmp_path / "nope")
    st.discard_episode(stream="a")
    assert st.stream_open_rows("a") == 0
    assert _check_streams(st, names) == {"a": 5, "b": 10, "c": 15}
    st.start_episode(row_obs(0, 5), stream="a")
    _step(st, "a", 0, 5)
    st.close()  # an open stream episode is kept as interrupted, counted with it
    st = ReplayStore.open(tmp_path / "s")
    assert _check_streams(st, names) == {"a": 6, "b": 10, "c": 15}
    # The default episode API is untouched once no stream is open.
    st.start_episode(row_obs(9, 0))
    st.add_step(action=np.zeros(2), reward=0.0, next_obs=row_obs(9, 1), terminated=True, truncated=False)
    assert st.num_steps("online") == 32
    st.start_episode(row_obs(9, 1))  # a default episode open in the partition ...
    st.start_episode(row_obs(0, 6), stream="a")
    with pytest.raises(StoreError, match="default episode is open"):
        _step(st, "a", 0, 6, end=True)  # ... so a's episode cannot be written yet; it is kept
    st.end_episode()
    st.end_episode(stream="a")
    assert st.stream_rows("a") == 7
    st.close()
    rep = verify_store(tmp_path / "s")
    assert rep["ok"], rep["problems"]


def test_add_steps_equals_add_step_row_by_row(tmp_path: Path) -> None:
    """The batch path (add_steps) stores exactly what add_step stores row by row (its plain formula)."""
    rng = np.random.default_rng(0)
    k = 23
    cols = {"action": rng.uniform(-1, 1, (k, 2)).astype(np.float32), "reward": rng.normal(size=k).astype(np.float32),
            "next_obs": rng.normal(size=(k, 3)).astype(np.float32), "terminated": np.zeros(k, bool),
            "truncated": np.zeros(k, bool), "is_success": rng.random(k) < 0.3, "intervention": rng.random(k) < 0.5,
            "executed_action": rng.uniform(-1, 1, (k, 2)).astype(np.float32),
            "timestamp": np.arange(k, dtype=np.float64)}
    cols["truncated"][-1] = True
    stores = [ReplayStore.create(tmp_path / n, env_id="x", observation_space=OBS, action_space=ACT, chunk_rows=8)
              for n in ("plain", "fast")]
    o0 = rng.normal(size=3).astype(np.float32)
    for j, st in enumerate(stores):
        for s in ("a", "b"):
            st.start_episode(o0, stream=s)
            if j == 0:
                for i in range(k):
                    st.add_step(**{c: v[i] for c, v in cols.items()}, stream=s)
            else:
                st.add_steps({c: v[:10] for c, v in cols.items()}, stream=s)
                st.add_steps({c: v[10:] for c, v in cols.items()}, stream=s)
    with pytest.raises(StoreError, match="only the last row"):
        stores[1].start_episode(o0, stream="c")
        stores[1].add_steps({c: v[::-1] for c, v in cols.items()}, stream="c")
    stores[1].discard_episode(stream="c")
    for st in stores:
        st.close()
    a, b = (ReplayStore.open(tmp_path / n, mode="r") for n in ("plain", "fast"))
    assert a.streams() == b.streams() == {"a": k, "b": k}
    np.testing.assert_array_equal(a.episodes("online"), b.episodes("online"))
    ra, rb = a.read_rows("online", 0, 2 * k), b.read_rows("online", 0, 2 * k)
    for f in a.field_names:
        np.testing.assert_array_equal(ra[f], rb[f], err_msg=f)
    a.close()
    b.close()


@pytest.mark.parametrize("trials", [10])
def test_kill9_streams_lose_nothing_acknowledged_and_store_nothing_twice(tmp_path: Path, trials: int) -> None:
    path = tmp_path / "store"
    names = [f"actor{i}" for i in range(3)]
    rnd = random.Random(1)
    acked = {s: 0 for s in names}
    for t in range(trials):
        p = subprocess.Popen([sys.executable, str(WRITER), str(path), str(t), str(len(names))],
                             stdout=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
        fd = p.stdout.fileno()  # type: ignore[union-attr]
        os.set_blocking(fd, False)
        buf = b""
        end = time.monotonic() + 60
        got = 0
        kill_after = rnd.randint(5, 60)  # acks, i.e. ended stream episodes
        while got < kill_after and time.monotonic() < end and p.poll() is None:
            time.sleep(0.002)
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for ln in lines:
                _, s, n = ln.decode().split()
                acked[s] = max(acked[s], int(n))
                got += 1
        time.sleep(rnd.random() * 0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        try:  # acks written just before the kill
            for ln in (buf + os.read(fd, 1 << 20)).split(b"\n"):
                if ln.strip():
                    _, s, n = ln.decode().split()
                    acked[s] = max(acked[s], int(n))
        except BlockingIOError:
            pass
        p.stdout.close()  # type: ignore[union-attr]
        assert got > 0, "the writer acknowledged nothing"
        ro = ReplayStore.open(path, mode="r")  # the committed state reads before any recovery
        ro.close()
        st = ReplayStore.open(path)  # recovery: replays the WAL's stream episodes
        try:
            rows = _check_streams(st, names)
        finally:
            st.close()
        for s in names:
            assert rows[s] >= acked[s], f"trial {t}: {s} acknowledged {acked[s]} rows, store has {rows[s]}"
    rep = verify_store(path)
    assert rep["ok"], rep["problems"]
