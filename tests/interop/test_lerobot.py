"""LeRobot v3 export/import: bit-exact round trips, the published v3 layout checked with pyarrow, mismatches.

`pip install lerobot` here would replace torch 2.13.0 (CPU) with a CUDA torch 2.10 and downgrade numpy,
so these tests validate our files against the LeRobotDataset v3 schema (codebase_version "v3.0":
meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-*/file-*.parquet,
data/chunk-*/file-*.parquet) with pyarrow; test_lerobot_package.py loads an export with the real lerobot
package in a separate venv (ROBORL_LEROBOT_PYTHON).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from roborl.store import ReplayStore

REPO = Path(__file__).resolve().parents[2]

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _all_rows(store: ReplayStore) -> dict[str, dict[str, np.ndarray]]:
    return {p: store.read_rows(p, store.head_row(p), store.end_row(p)) for p in ("demo", "online")}


def _assert_bit_exact(a: ReplayStore, b: ReplayStore, partitions_merged: bool = False) -> None:
    """Every field of every row, byte for byte (NaN payloads included), and the episode table."""
    ra, rb = _all_rows(a), _all_rows(b)
    if partitions_merged:  # b holds a's demo then online episodes in one partition
        ra = {"demo": {k: np.concatenate([ra["demo"][k], ra["online"][k]]) for k in ra["demo"]}}
        rb = {"demo": rb["demo"]}
        ea = np.concatenate([a.episodes("demo"), a.episodes("online")])
        eb = b.episodes("demo")
        np.testing.assert_array_equal(ea[:, 1:], eb[:, 1:])
    for part in ra:
        assert set(ra[part]) == set(rb[part])
        for k in ra[part]:
            x, y = ra[part][k], rb[part][k]
            assert x.dtype == y.dtype and x.shape == y.shape, k
            assert x.tobytes() == y.tobytes(), k


@pytest.fixture()
def rich_store(tmp_path: Path) -> Path:
    """Dict observations (float64 + float32 leaves), a [-2, 2] action box, an extra field, both partitions,
    terminated / truncated / interrupted episodes, NaN and finite log-probs, interventions, successes."""
    obs_space = gym.spaces.Dict({"pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
                                 "goal": gym.spaces.Box(-1, 1, (2,), np.float32)})
    act_space = gym.spaces.Box(-2, 2, (2,), np.float32)
    path = tmp_path / "rich"
    st = ReplayStore.create(path, env_id="synthetic/Test-v0", observation_space=obs_space, action_space=act_space,
                            extra_fields={"contact": ("float32", [4])}, chunk_rows=16)
    rng = np.random.default_rng(0)

    def obs() -> dict[str, np.ndarray]:
        return {"pos": rng.normal(size=3), "goal": rng.uniform(-1, 1, 2).astype(np.float32)}

    for part, T, end in (("demo", 7, "term"), ("demo", 20, "trunc"), ("online", 5, "interrupt"), ("online", 33, "term")):
        st.start_episode(obs(), part)
        for t in range(T):
            st.add_step(action=rng.uniform(-2, 2, 2).astype(np.float32), executed_action=rng.uniform(-2, 2, 2),
                        reward=float(rng.normal()), next_obs=obs(), terminated=end == "term" and t == T - 1,
                        truncated=end == "trunc" and t == T - 1, is_success=bool(t % 3 == 0),
                        intervention=bool(t % 4 == 1), log_prob=np.nan if t % 2 else float(rng.normal()),
                        timestamp=1.7e9 + t * 0.05, contact=rng.normal(size=4).astype(np.float32))
        if end == "interrupt":
            st.end_episode()
    st.close()
    return path


def test_round_trip_is_bit_exact_for_reach_demos(tmp_path: Path, store_cli) -> None:
    out = tmp_path / "lr"
    p = store_cli("export", str(REPO / "demos/reach"), "--format", "lerobot", "--out", str(out))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["episodes"] == 20 and res["frames"] == 1000 and res["fps"] == 10  # Reach runs at 10 Hz
    p = store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "back"))
    assert p.returncode == 0, p.stderr
    a, b = ReplayStore.open(REPO / "demos/reach", mode="r"), ReplayStore.open(tmp_path / "back", mode="r")
    assert b.env_id == a.env_id and b.meta["observation_space"] == a.meta["observation_space"]
    _assert_bit_exact(a, b)
    a.close()
    b.close()


def test_round_trip_is_bit_exact_for_dict_obs_extras_and_both_partitions(rich_store: Path, tmp_path: Path,
                                                                          store_cli) -> None:
    out = tmp_path / "lr"
    p = store_cli("export", str(rich_store), "--format", "lerobot", "--out", str(out), "--fps", "20")
    assert p.returncode == 0, p.stderr
    info = json.loads((out / "meta/info.json").read_text())
    assert {"observation.pos", "observation.goal", "next.observation.pos", "contact"} <= set(info["features"])
    assert info["features"]["observation.pos"]["dtype"] == "float64"
    p = store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "back"))
    assert p.returncode == 0, p.stderr
    a, b = ReplayStore.open(rich_store, mode="r"), ReplayStore.open(tmp_path / "back", mode="r")
    assert b.meta["observation_space"] == a.meta["observation_space"]
    assert b.meta["action_space"] == a.meta["action_space"] and b.meta["extra_fields"] == ["contact"]
    _assert_bit_exact(a, b, partitions_merged=True)  # flags incl. interrupted: episodes tables equal
    a.close()
    b.close()


def test_export_follows_the_lerobot_v3_layout(rich_store: Path, tmp_path: Path, store_cli) -> None:
    """The published v3 schema, checked file by file with pyarrow."""
    out = tmp_path / "lr"
    assert store_cli("export", str(rich_store), "--format", "lerobot", "--out", str(out), "--fps", "20").returncode == 0
    info = json.loads((out / "meta/info.json").read_text())
    for key, typ in (("codebase_version", str), ("fps", int), ("features", dict), ("total_episodes", int),
                     ("total_frames", int), ("total_tasks", int), ("chunks_size", int), ("data_files_size_in_mb", int),
                     ("video_files_size_in_mb", int), ("data_path", str), ("splits", dict)):
        assert isinstance(info[key], typ), key
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["video_path"] is None
    assert info["total_episodes"] == 4 and info["total_frames"] == 65 and info["splits"] == {"train": "0:4"}
    feats = info["features"]
    for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
                  ("task_index", "int64")):
        assert feats[k]["dtype"] == dt and feats[k]["shape"] == [1]
    for f in feats.values():
        assert set(f) >= {"dtype", "shape", "names"} and all(isinstance(s, int) for s in f["shape"])

    # data/: every declared feature is a column of the declared dtype; vectors are fixed-size lists of shape[0].
    files = sorted(out.glob("data/chunk-*/file-*.parquet"))
    assert files and all(re.search(r"data/chunk-\d{3}/file-\d{3}\.parquet$", f.as_posix()) for f in files)
    assert (out / info["data_path"].format(chunk_index=0, file_index=0)).is_file()
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.num_rows == info["total_frames"]
    for name, f in feats.items():
        col = table.schema.field(name).type
        if f["shape"] == [1]:
            assert str(col) == {"float32": "float", "float64": "double"}.get(f["dtype"], f["dtype"]), name
        else:
            assert pa.types.is_fixed_size_list(col) and col.list_size == int(np.prod(f["shape"])), name
            assert str(col.value_type) == {"float32": "float", "float64": "double"}.get(f["dtype"], f["dtype"])
    index = table.column("index").to_numpy()
    np.testing.assert_array_equal(index, np.arange(len(index)))
    fi = table.column("frame_index").to_numpy()
    np.testing.assert_array_equal(table.column("timestamp").to_numpy(), (fi / 20).astype(np.float32))

    # meta/episodes: one row per episode with the v3 locator columns and per-episode stats.
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1, 2, 3] and [e["length"] for e in eps] == [7, 20, 5, 33]
    for e in eps:
        assert e["tasks"] == ["synthetic/Test-v0"] and e["data/chunk_index"] == 0 and e["data/file_index"] == 0
        assert e["meta/episodes/chunk_index"] == 0 and e["meta/episodes/file_index"] == 0
        assert e["dataset_to_index"] - e["dataset_from_index"] == e["length"]
        rows = index[(table.column("episode_index").to_numpy() == e["episode_index"])]
        assert rows.min() == e["dataset_from_index"] and rows.max() + 1 == e["dataset_to_index"]
        assert len(e["stats/action/mean"]) == 2 and e["stats/action/count"] == [e["length"]]

    # meta/tasks.parquet: a DataFrame indexed by task (pandas metadata), task_index column.
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["synthetic/Test-v0"] and tasks.column("task_index").to_pylist() == [0]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    # meta/stats.json: min/max/mean/std/count per feature, vectors as long as the feature.
    stats = json.loads((out / "meta/stats.json").read_text())
    for name in ("observation.pos", "action", "next.reward"):
        assert set(stats[name]) == {"min", "max", "mean", "std", "count"}
        assert len(stats[name]["mean"]) == int(np.prod(feats[name]["shape"])) and stats[name]["count"] == [65]
    acts = table.column("action").combine_chunks().flatten().to_numpy().reshape(-1, 2)
    np.testing.assert_allclose(stats["action"]["mean"], acts.astype(np.float64).mean(0))


def test_generic_lerobot_dataset_without_roborl_block_imports(tmp_path: Path, store_cli) -> None:
    """A dataset another tool wrote: observation.state / action / next.reward / next.done only."""
    root = tmp_path / "other"
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    T = [4, 6]
    obs = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    act = -np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    ep = np.repeat([0, 1], T)
    done = np.zeros(10, bool)
    done[3] = True  # the first episode terminates; the second stops (truncated)
    cols = {"observation.state": pa.FixedSizeListArray.from_arrays(pa.array(obs.reshape(-1)), 3),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(act.reshape(-1)), 2),
            "next.reward": pa.array(np.linspace(0, 1, 10, dtype=np.float32)), "next.done": pa.array(done),
            "timestamp": pa.array(np.zeros(10, np.float32)), "frame_index": pa.array(np.r_[0:4, 0:6].astype(np.int64)),
            "episode_index": pa.array(ep.astype(np.int64)), "index": pa.array(np.arange(10, dtype=np.int64)),
            "task_index": pa.array(np.zeros(10, np.int64))}
    pq.write_table(pa.table(cols), root / "data/chunk-000/file-000.parquet")
    feats = {"observation.state": {"dtype": "float32", "shape": [3], "names": None},
             "action": {"dtype": "float32", "shape": [2], "names": None},
             "next.reward": {"dtype": "float32", "shape": [1], "names": None},
             "next.done": {"dtype": "bool", "shape": [1], "names": None}}
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 30, "features": feats,
                                                     "robot_type": "so100", "data_path": "x"}))
    p = store_cli("import", str(root), "--format", "lerobot", "--store", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    st = ReplayStore.open(tmp_path / "s", mode="r")
    assert st.env_id == "so100" and st.num_episodes("demo") == 2
    rows = st.read_rows("demo", 0, 10)
    np.testing.assert_array_equal(rows["obs"], obs)
    np.testing.assert_array_equal(rows["next_obs"][:3], obs[1:4])  # next frame inside an episode
    np.testing.assert_array_equal(rows["next_obs"][3], obs[3])  # last frame: its own observation
    assert rows["terminated"][3] and not rows["truncated"][3] and rows["truncated"][9] and not rows["terminated"][9]
    st.close()


def test_mismatches_are_one_line_naming_the_field(rich_store: Path, tmp_path: Path, store_cli, one_line_error) -> None:
    out = tmp_path / "reach"
    assert store_cli("export", str(REPO / "demos/reach"), "--format", "lerobot", "--out", str(out)).returncode == 0
    # fps: the dataset runs at 10 fps
    one_line_error(store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "s1"),
                             "--fps", "20"), "fps", "10")
    # --fps on export must agree with the env's control rate
    one_line_error(store_cli("export", str(REPO / "demos/reach"), "--format", "lerobot", "--out",
                             str(tmp_path / "x"), "--fps", "30"), "fps", "10")
    # spaces: Reach observations (13) into the rich store (Dict pos/goal)
    p = store_cli("import", str(out), "--format", "lerobot", "--store", str(rich_store))
    one_line_error(p, "obs.")
    # --env with other spaces
    one_line_error(store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "s2"),
                             "--env", "Pendulum-v1"), "fps")
    # a missing feature: drop 'action' from a generic copy
    gen = tmp_path / "gen"
    shutil.copytree(out, gen)
    info = json.loads((gen / "meta/info.json").read_text())
    info.pop("roborl")
    info["features"].pop("action")
    (gen / "meta/info.json").write_text(json.dumps(info))
    one_line_error(store_cli("import", str(gen), "--format", "lerobot", "--store", str(tmp_path / "s3")), "'action'")
    # a camera feature we cannot decode yet
    info["features"]["action"] = {"dtype": "float32", "shape": [4], "names": None}
    info["features"]["observation.images.wrist"] = {"dtype": "video", "shape": [3, 64, 64], "names": None}
    (gen / "meta/info.json").write_text(json.dumps(info))
    one_line_error(store_cli("import", str(gen), "--format", "lerobot", "--store", str(tmp_path / "s4")),
                   "observation.images.wrist")
    # an older dataset version
    info["codebase_version"] = "v2.1"
    (gen / "meta/info.json").write_text(json.dumps(info))
    one_line_error(store_cli("import", str(gen), "--format", "lerobot", "--store", str(tmp_path / "s5")),
                   "codebase_version")
    # a non-empty --out
    one_line_error(store_cli("export", str(REPO / "demos/reach"), "--format", "lerobot", "--out", str(out)), "--out")
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s3").exists()


def test_missing_pyarrow_names_the_extra(tmp_path: Path, store_cli, one_line_error) -> None:
    p = store_cli("export", str(REPO / "demos/reach"), "--format", "lerobot", "--out", str(tmp_path / "o"),
                  pre="sys.modules['pyarrow'] = None")
    one_line_error(p, "pyarrow", "roborl[interop]")
