"""A damaged store is never used silently: each corruption on a real store on disk is either
detected by the load that meets it (one line naming the array and chunk, exit 2 in the CLI)
or reported by `store verify` (JSON printed, exit 1)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from roborl.cli import main
from roborl.store import ReplayStore, Sampler, StoreConfig, StoreError
from roborl.store import wal as walmod
from roborl.store.schema import StoreCorruptError, WalCorruptError
from roborl.store.verify import verify_store

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _fill(st: ReplayStore, n_eps: int, length: int, part: str = "online", v: float = 0.0) -> None:
    for e in range(n_eps):
        st.start_episode(np.full(4, v, np.float32), part)
        for i in range(length):
            v += 1.0
            st.add_step(action=[0.1, -0.1], reward=v, next_obs=np.full(4, v, np.float32),
                        terminated=i == length - 1, truncated=False)


def _store(tmp_path: Path, name: str = "s", env_id: str = "t") -> Path:
    """chunk_rows 16: online 40 rows (chunks 0-2), demo 18 rows (chunks 0-1)."""
    p = tmp_path / name
    st = ReplayStore.create(p, env_id=env_id, observation_space=OBS, action_space=ACT, chunk_rows=16)
    _fill(st, 4, 10)
    _fill(st, 2, 9, "demo", 100.0)
    assert st.check_chunks() == [] and st.info()["online"]["episodes"] == 4  # a live writer is sound too
    st.close()
    assert verify_store(p)["ok"]
    return p


def _chunk(p: Path, part: str, field: str, ci: int) -> Path:
    c = p / "data.zarr" / part / field / "c" / str(ci)
    return c / "0" if c.is_dir() else c


def _damage(f: Path, how: str) -> None:
    data = f.read_bytes()
    if how == "deleted":
        f.unlink()
    elif how == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        f.write_bytes(bytes(len(data)))
    elif how == "bitflip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        f.write_bytes(bytes(b))
    else:
        raise AssertionError(how)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str) -> str:
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err.strip()


def _merge_refused(tmp_path: Path, src: Path, match: str) -> None:
    """Merging ``src`` fails naming the damage, and the destination keeps no trace of it."""
    dst = tmp_path / "dst"
    if not dst.exists():
        ReplayStore.create(dst, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=16).close()
    with ReplayStore.open(dst) as d:
        with pytest.raises(StoreCorruptError, match=match):
            d.merge_from(src)
        assert d.num_episodes("demo") == 0
    res = verify_store(dst)
    assert res["ok"] and res["demo"] == {"episodes": 0, "steps": 0}, "nothing laundered into the destination"


@pytest.mark.parametrize("field", ["obs", "reward"])
def test_deleted_data_chunk_is_corruption_not_zeros(tmp_path: Path, capsys, field: str) -> None:
    p = _store(tmp_path)
    _damage(_chunk(p, "online", field, 1), "deleted")
    rc, _, err = _cli(capsys, "store", "info", str(p))
    assert rc == 2 and f"data.zarr/online/{field} chunk 1 is missing" in _one_line(err)
    with ReplayStore.open(p, mode="r") as st:
        with pytest.raises(StoreCorruptError, match=f"online/{field} chunk 1 is missing"):
            Sampler(st)  # loading the RAM mirror reads (and checks) every live row
        with pytest.raises(StoreCorruptError, match=f"{field} chunk 1"):
            st.read_rows("online", 0, 40)
    _merge_refused(tmp_path, p, f"online/{field} chunk 1 is missing")
    rc, out, _ = _cli(capsys, "store", "verify", str(p), "--json")
    assert rc == 1 and any(f"{field} chunk 1 is missing" in m for m in json.loads(out)["problems"])


def test_deleted_episodes_chunk(tmp_path: Path, capsys) -> None:
    p = _store(tmp_path)
    _damage(_chunk(p, "demo", "_episodes", 0), "deleted")
    with pytest.raises(StoreCorruptError, match="demo/_episodes chunk 0 is missing"):
        ReplayStore.open(p, mode="r")
    _merge_refused(tmp_path, p, "demo/_episodes chunk 0 is missing")
    rc, _, err = _cli(capsys, "store", "info", str(p))
    assert rc == 2 and "_episodes chunk 0 is missing" in _one_line(err)


@pytest.mark.parametrize("how", ["truncated", "zeroed", "bitflip"])
def test_damaged_chunk_names_the_chunk(tmp_path: Path, capsys, how: str) -> None:
    p = _store(tmp_path)
    _damage(_chunk(p, "demo", "obs", 1), how)
    with ReplayStore.open(p, mode="r") as st:
        with pytest.raises(StoreCorruptError, match="demo/obs chunk 1 (is corrupt|is truncated|does not start)"):
            Sampler(st)
    _merge_refused(tmp_path, p, "demo/obs chunk 1")
    rc, out, err = _cli(capsys, "store", "verify", str(p), "--json")
    res = json.loads(out)
    assert rc == 1 and not res["ok"] and any("demo/obs chunk 1" in m for m in res["problems"]) and not err


@pytest.mark.parametrize("how", ["deleted", "truncated", "zeroed"])
def test_verify_quick_checks_chunks(tmp_path: Path, capsys, how: str) -> None:
    p = _store(tmp_path)
    _damage(_chunk(p, "online", "action", 2), how)
    rc, out, _ = _cli(capsys, "store", "verify", str(p), "--quick", "--json")
    res = json.loads(out)
    assert rc == 1 and any("online/action chunk 2" in m for m in res["problems"]), res
    rc, out, _ = _cli(capsys, "store", "verify", str(p), "--quick")
    assert rc == 1 and "action chunk 2" in out


def test_zero_filled_episodes_chunk(tmp_path: Path, capsys) -> None:
    p = _store(tmp_path)
    _damage(_chunk(p, "online", "_episodes", 0), "zeroed")
    rc, _, err = _cli(capsys, "store", "info", str(p))
    assert rc == 2 and "data.zarr/online/_episodes chunk 0" in _one_line(err)
    rc, out, err = _cli(capsys, "store", "verify", str(p), "--json")
    res = json.loads(out)  # the report is always printed
    assert rc == 1 and "online/_episodes chunk 0" in res["problems"][0] and not err


@pytest.mark.parametrize("edit", ["commit_rows", "commit_rows_in_shape", "zarr_dtype", "zarr_json_garbage"])
def test_commit_or_array_metadata_disagrees(tmp_path: Path, capsys, edit: str) -> None:
    p = _store(tmp_path)
    if edit.startswith("commit_rows"):
        c = json.loads((p / "COMMIT.json").read_text())
        c["partitions"]["online"]["rows"] = 1000 if edit == "commit_rows" else 44
        (p / "COMMIT.json").write_text(json.dumps(c))
        want = "COMMIT.json says online has" if edit == "commit_rows" else "online/obs"
    else:
        zj = p / "data.zarr" / "online" / "reward" / "zarr.json"
        if edit == "zarr_dtype":
            zj.write_text(zj.read_text().replace('"float32"', '"float64"'))
            want = "online/reward/zarr.json says float64 [] per row, meta.json says float32"
        else:
            zj.write_text("{not json")
            want = "online/reward/zarr.json is unreadable"
    rc, _, err = _cli(capsys, "store", "info", str(p))
    assert rc == 2 and want in _one_line(err)
    rc, out, err = _cli(capsys, "store", "verify", str(p), "--json")
    assert rc == 1 and any(want in m for m in json.loads(out)["problems"]) and not err
    with pytest.raises(StoreCorruptError, match=re.escape(want)):
        with ReplayStore.open(p, mode="r") as st:
            Sampler(st)


def _crash(st: ReplayStore) -> None:
    """kill -9 in-process: drop the lock and the WAL fd without committing."""
    if st._wal is not None:
        st._wal.close()
    st._release_lock()
    st._closed = True


def test_wal_corrupt_in_the_middle_needs_repair(tmp_path: Path, capsys) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=1024)
    _fill(st, 2, 10)  # 20 steps, all in the WAL
    assert st.check_chunks() == [], "ended episodes not yet committed are not missing chunks"
    wal = p / st.wal_name  # type: ignore[operator]
    _crash(st)
    data = wal.read_bytes()
    rec = (len(data) - len(walmod.FILE_HEADER)) // 20
    bad = bytearray(data)
    at = len(walmod.FILE_HEADER) + 5 * rec
    bad[at + rec // 2] ^= 0x01  # inside record 5 of 20
    wal.write_bytes(bytes(bad))
    side = p / (wal.name + ".after-corruption")
    for _ in range(2):  # refused every time, never cut
        with pytest.raises(WalCorruptError, match=f"{wal.name} has a corrupt record at byte {at} followed by 14 "
                                                  f"valid records .*{side.name}.*roborl store repair"):
            ReplayStore.open(p, mode="a")
        assert wal.read_bytes() == bytes(bad) and side.read_bytes() == bytes(bad[at:])
    other = _store(tmp_path, "other")
    rc, _, err = _cli(capsys, "store", "merge", str(other), "--into", str(p))  # a writable open
    assert rc == 2 and "roborl store repair" in _one_line(err)
    with ReplayStore.open(p, mode="r") as ro:  # readers see the last commit
        assert ro.num_steps("online") == 0
    rc, _, err = _cli(capsys, "store", "info", str(p))
    assert rc == 2 and "corrupt record" in _one_line(err)
    res = verify_store(p)
    assert not res["ok"] and "corrupt record" in res["problems"][0]
    rc, out, _ = _cli(capsys, "store", "repair", str(p))
    assert rc == 0
    assert "kept:    5 records before it (online rows 0..4 (5 records)); 5 steps replayed" in out, out
    assert f"dropped: {len(data) - at} bytes from byte {at} on: the corrupt record and 14 valid records after it " \
           "(online rows 6..19 (14 records))" in out, out
    assert side.name in out and side.exists()
    with ReplayStore.open(p) as st2:
        assert st2.num_steps("online") == 5 and st2.recovered["replayed_steps"] == 0
        assert np.array_equal(st2.read_rows("online", 0, 5)["reward"], np.arange(1, 6, dtype=np.float32))
    assert verify_store(p)["ok"]
    rc, out, _ = _cli(capsys, "store", "repair", str(p))
    assert rc == 0 and "nothing to repair" in out


def test_wal_damaged_file_header_is_not_a_torn_tail(tmp_path: Path, capsys) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, chunk_rows=1024)
    _fill(st, 1, 6)
    wal = p / st.wal_name  # type: ignore[operator]
    _crash(st)
    bad = bytearray(wal.read_bytes())
    bad[2] ^= 0x01
    wal.write_bytes(bytes(bad))
    with pytest.raises(WalCorruptError, match="at byte 0 followed by 6 valid records"):
        ReplayStore.open(p)
    rc, out, _ = _cli(capsys, "store", "repair", str(p))
    assert rc == 0 and "kept:    0 records" in out and "6 valid records after it" in out
    with ReplayStore.open(p) as st2:
        assert st2.num_steps("online") == 0


def test_eviction_by_a_live_writer_is_not_corruption(tmp_path: Path) -> None:
    p = tmp_path / "s"
    st = ReplayStore.create(p, env_id="t", observation_space=OBS, action_space=ACT, online_capacity=40, chunk_rows=16)
    _fill(st, 4, 10)
    with ReplayStore.open(p, mode="r") as ro:
        head = ro.head_row("online")
        _fill(st, 6, 10)  # the writer evicts and frees the chunks this reader still counts as live
        assert not (p / "data.zarr" / "online" / "obs" / "c" / "0").exists()
        assert ro.check_chunks() == []
        with pytest.raises(StoreError, match="evicted by the writer after this reader opened") as e:
            ro.read_rows("online", head, head + 5)
        assert not isinstance(e.value, StoreCorruptError)
    st.close()


def test_demos_from_another_env_are_refused(tmp_path: Path, capsys) -> None:
    src = _store(tmp_path, "src", env_id="roborl/Reach-v0")
    dst = tmp_path / "dst"
    ReplayStore.create(dst, env_id="roborl/Push-v0", observation_space=OBS, action_space=ACT, chunk_rows=16).close()
    with ReplayStore.open(dst) as d:
        with pytest.raises(StoreError, match="env_id is 'roborl/Reach-v0' but .* holds 'roborl/Push-v0'"):
            d.merge_from(src)
        assert d.num_episodes("demo") == 0
    rc, _, err = _cli(capsys, "store", "merge", str(src), "--into", str(dst))
    assert rc == 2 and "--allow-env-mismatch" in _one_line(err)
    rc, out, _ = _cli(capsys, "store", "merge", str(src), "--into", str(dst), "--allow-env-mismatch")
    assert rc == 0 and "merged 6 episodes" in out
    assert StoreConfig().allow_env_mismatch is False
    shutil.rmtree(dst)
    ReplayStore.create(dst, env_id="roborl/Push-v0", observation_space=OBS, action_space=ACT, chunk_rows=16).close()
    with ReplayStore.open(dst) as d:
        assert d.merge_from(src, allow_env_mismatch=True) == 6
