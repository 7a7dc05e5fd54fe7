"""ReplayStore: round trip, Dict spaces, schema mismatch, read-only, eviction, discard, WAL tails, temp files, merge."""
from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from roborl.store import ReplayStore, StoreError
from roborl.store import wal as walmod
from roborl.store.verify import verify_store

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _fill(st: ReplayStore, n_eps: int, length: int, part: str = "online", start_val: float = 0.0) -> None:
    v = start_val
    for e in range(n_eps):
        st.start_episode(np.full(4, v, np.float32), part)
        for i in range(length):
            v += 1.0
            st.add_step(action=np.array([v, -v]) / 1e4, reward=v, next_obs=np.full(4, v, np.float32),
                        terminated=i == length - 1 and e % 2 == 0, truncated=i == length - 1 and e % 2 == 1,
                        is_success=i == length - 1, timestamp=v)


def _crash(st: ReplayStore) -> None:
    """Simulate kill -9 in-process: drop the lock and the WAL fd without committing."""
    if st._wal is not None:
        st._wal.close()
    st._release_lock()
    st._closed = True


def test_round_trip_reopen_and_read_only(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(st, 3, 10)
    st.start_episode(np.zeros(4), "demo")
    st.add_step(action=[0.1, 0.2], executed_action=[0.05, 0.2], reward=1.0, next_obs=np.ones(4), terminated=True,
                truncated=False, intervention=True, log_prob=-1.5)
    assert st.num_steps("online") == 30 and st.num_episodes("online") == 3 and st.num_episodes("demo") == 1
    gen = st.generation
    # A reader sees the last commit while the writer is active; it cannot write.
    with ReplayStore.open(p, mode="r") as ro:
        assert ro.generation == gen
        with pytest.raises(StoreError, match="read-only"):
            ro.start_episode(np.zeros(4))
    with pytest.raises(StoreError, match="LOCK"):
        ReplayStore.open(p, mode="a")
    st.close()
    assert not list(p.glob("wal-*.log")), "a clean close leaves no WAL"
    assert "/" + str(tmp_path).strip("/") not in (p / "meta.json").read_text(), "no absolute paths in metadata"
    with ReplayStore.open(p, mode="r", observation_space=OBS, action_space=ACT) as ro:
        rows = ro.read_episode("online", 1)
        assert np.array_equal(rows["reward"], np.arange(11, 21, dtype=np.float32))
        assert np.array_equal(rows["obs"][1:], rows["next_obs"][:-1])
        assert rows["truncated"][-1] and not rows["terminated"].any()
        d = ro.read_episode("demo", 0)
        assert d["intervention"][0] and d["log_prob"][0] == np.float32(-1.5)
        assert np.allclose(d["executed_action"][0], [0.05, 0.2]) and np.allclose(d["action"][0], [0.1, 0.2])
    assert verify_store(p)["ok"]


def test_schema_mismatch_names_the_field(tmp_path: Path) -> None:
    p = tmp_path / "s"
    ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT).close()
    with pytest.raises(StoreError, match=r"observation_space.shape is \[4\] in the store but \[5\]"):
        ReplayStore.open(p, observation_space=gym.spaces.Box(-np.inf, np.inf, (5,), np.float32))
    with pytest.raises(StoreError, match="action_space upper bound"):
        ReplayStore.open(p, action_space=gym.spaces.Box(-1.0, 2.0, (2,), np.float32))
    with pytest.raises(StoreError, match="dtype"):
        ReplayStore.open(p, observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float64))
    with pytest.raises(StoreError, match="not a replay store"):
        ReplayStore.open(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT)


def test_dict_observations(tmp_path: Path) -> None:
    obs_sp = gym.spaces.Dict({"cam": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                              "state": gym.spaces.Box(-1, 1, (3,), np.float32)})
    p = tmp_path / "d"
    st = ReplayStore.create(p, env_id="t", observation_space=obs_sp, action_space=ACT)
    o = {"cam": np.full((8, 8, 3), 7, np.uint8), "state": np.zeros(3)}
    st.start_episode(o)
    o2 = {"cam": np.full((8, 8, 3), 9, np.uint8), "state": np.ones(3)}
    st.add_step(action=[0, 0], reward=0.0, next_obs=o2, terminated=True, truncated=False)
    with pytest.raises(StoreError, match="add_step before start_episode"):
        st.add_step(action=[0, 0], reward=0.0, next_obs=o2, terminated=True, truncated=False)
    with pytest.raises(StoreError, match="no key 'state'"):
        st.start_episode({"cam": o["cam"]})
    st.close()
    with ReplayStore.open(p, mode="r", observation_space=obs_sp) as ro:
        r = ro.read_episode("online", 0)
        assert r["obs.cam"].dtype == np.uint8 and (r["obs.cam"] == 7).all() and (r["next_obs.cam"] == 9).all()
        assert np.array_equal(r["next_obs.state"][0], np.ones(3, np.float32))


def test_eviction_keeps_whole_episodes_and_frees_chunks(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, online_capacity=50, chunk_rows=16)
    _fill(st, 5, 7, part="demo")
    _fill(st, 30, 7)  # 210 steps into capacity 50
    assert st.num_steps("online") <= 50 and st.num_episodes("online") == 7
    eps = st.episodes("online")
    assert eps[0, 0] == st.parts["online"].head_row and np.all(eps[1:, 0] == eps[:-1, 0] + eps[:-1, 1])
    assert st.num_steps("demo") == 35, "the demo partition is never evicted"
    st.close()
    with ReplayStore.open(p, mode="r") as ro:
        r = ro.read_rows("online", int(eps[0, 0]), int(eps[-1, 0] + eps[-1, 1]))
        assert np.array_equal(r["reward"], np.arange(30 * 7 - 48, 30 * 7 + 1, dtype=np.float32))
    chunk_dir = p / "data.zarr" / "online" / "reward" / "c"
    assert not (chunk_dir / "0").exists(), "chunks wholly before the head are deleted"
    assert verify_store(p)["ok"]


def test_discard_and_buffered_episodes(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(st, 1, 5)
    st.start_episode(np.zeros(4))
    for i in range(20):  # crosses a flush: discard must rewind committed rows too
        st.add_step(action=[0, 0], reward=-1.0, next_obs=np.zeros(4), terminated=False, truncated=False)
    st.discard_episode()
    st.start_episode(np.zeros(4), buffered=True)
    st.add_step(action=[0, 0], reward=-2.0, next_obs=np.zeros(4), terminated=False, truncated=False)
    st.discard_episode()
    st.start_episode(np.zeros(4), "demo", buffered=True)
    for i in range(3):
        st.add_step(action=[0, 0], reward=5.0, next_obs=np.zeros(4), terminated=i == 2, truncated=False)
    assert st.num_steps("online") == 5 and st.num_steps("demo") == 3
    _crash(st)
    with ReplayStore.open(p, mode="a") as st2:
        assert st2.num_steps("online") == 5 and st2.num_steps("demo") == 3
        assert not (st2.read_rows("online", 0, 5)["reward"] < 0).any()
    assert verify_store(p)["ok"]


def test_truncated_wal_tails(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=1024)
    _fill(st, 2, 10)  # 20 steps, all in the WAL
    wal_path = p / st._wal_name  # type: ignore[operator]
    _crash(st)
    data = wal_path.read_bytes()
    rec = (len(data) - len(walmod.FILE_HEADER)) // 20
    for cut in (len(data), len(data) - 3, len(data) - rec - 1, len(walmod.FILE_HEADER) + 5 * rec + 7,
                len(walmod.FILE_HEADER) + 3):
        q = tmp_path / f"cut{cut}"
        os.system(f"cp -r {p} {q}")
        (q / wal_path.name).write_bytes(data[:cut])
        with ReplayStore.open(q) as s2:
            # Every whole record survives (a partial episode is kept as interrupted); the torn one goes.
            steps = s2.num_steps("online")
            assert steps == (cut - len(walmod.FILE_HEADER)) // rec
            assert s2.recovered["torn_bytes"] == (cut - len(walmod.FILE_HEADER)) % rec
            r = s2.read_rows("online", 0, steps)["reward"]
            assert np.array_equal(r, np.arange(1, steps + 1, dtype=np.float32))
        assert verify_store(q)["ok"] and not list(q.glob("wal-*.log"))
    # A flipped byte in the last record fails its CRC: that record (only) is dropped.
    q = tmp_path / "flip"
    os.system(f"cp -r {p} {q}")
    bad = bytearray(data)
    bad[-2] ^= 0xFF
    (q / wal_path.name).write_bytes(bytes(bad))
    with ReplayStore.open(q) as s2:
        assert s2.num_steps("online") == 19 and s2.num_episodes("online") == 2
        assert s2.recovered["interrupted_episodes"] == ["online"]
    assert verify_store(q)["ok"]


def test_leftover_temp_files_removed(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(st, 2, 10)
    _crash(st)
    junk = [p / "data.zarr" / "online" / "obs" / "c" / "1" / "0.3f2a9c.partial",
            p / "data.zarr" / "online" / "obs" / "zarr.json.77aa.partial",
            p / "COMMIT.json.tmp", p / "wal-000000999.log"]
    for j in junk:
        j.parent.mkdir(parents=True, exist_ok=True)
        j.write_bytes(b"garbage")
    pre = verify_store(p)
    assert pre["ok"] and len(pre["warnings"]) >= 4  # read-only verify reports, never deletes
    assert all(j.exists() for j in junk)
    with ReplayStore.open(p) as s2:
        assert len(s2.recovered["removed_files"]) == 4 and s2.num_steps("online") == 20
    assert not any(j.exists() for j in junk)
    post = verify_store(p)
    assert post["ok"] and not post["warnings"]


def test_verify_detects_damage(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(st, 3, 10)
    st.close()
    chunk = p / "data.zarr" / "online" / "reward" / "c" / "1"
    chunk.unlink()
    res = verify_store(p)
    assert not res["ok"] and "reward chunk 1 is missing" in res["problems"][0]
    c = json.loads((p / "COMMIT.json").read_text())
    c["partitions"]["online"]["episodes"] = 7
    (p / "COMMIT.json").write_text(json.dumps(c))
    assert not verify_store(p)["ok"]


def test_merge_from(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    sa = ReplayStore.create(a, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(sa, 4, 9, part="demo")
    _fill(sa, 2, 5, part="online", start_val=100.0)
    sa.close()
    sb = ReplayStore.create(b, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(sb, 1, 3, part="demo", start_val=-50.0)
    assert sb.merge_from(a) == 6
    assert sb.merge_from(a) == 0, "a source is merged once"
    assert sb.num_episodes("demo") == 7 and sb.num_steps("demo") == 3 + 36 + 10
    r = sb.read_episode("demo", 5)
    assert np.array_equal(r["reward"], np.arange(101, 106, dtype=np.float32))
    sb.close()
    assert verify_store(b)["ok"]
    c = tmp_path / "c"
    ReplayStore.create(c, env_id="t", observation_space=gym.spaces.Box(-1, 1, (3,), np.float32), action_space=ACT).close()
    with ReplayStore.open(b) as sb2, pytest.raises(StoreError, match="schema mismatch"):
        sb2.merge_from(c)
