"""Replay stores <-> LeRobotDataset v3 (``codebase_version`` "v3.0") directories.

Layout written (LeRobot's templates; one task, the env id)::

    meta/info.json                              codebase_version, fps, features, totals, path templates
    meta/stats.json                             per feature: min, max, mean, std, count (all frames)
    meta/tasks.parquet                          task (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, data and video locators, stats/*
    data/chunk-000/file-000.parquet             one row per frame, episodes never split across files
    videos/<camera>/chunk-000/file-000.mp4      mp4 per camera, episodes back to back (next file past 200 MiB)

Store field -> LeRobot feature: ``obs`` -> ``observation.state`` (Dict leaves ``obs.<k>`` ->
``observation.<k>``; camera leaves, uint8 [H, W, 3] ``obs.pixels.<cam>`` (or ``obs.<cam>``), ->
``observation.images.<cam>``, dtype ``video``), ``action`` -> ``action``, ``reward`` ->
``next.reward``, ``terminated`` / ``truncated`` -> ``next.terminated`` / ``next.truncated`` (and
LeRobot's ``next.done``, their or), ``is_success`` -> ``next.success``, the store's wall-clock
``timestamp`` -> ``wall_time`` (LeRobot's ``timestamp`` is ``frame_index / fps``). ``next_obs``
is kept as ``next.observation.*`` and ``executed_action``, ``intervention``, ``log_prob`` and
extra fields under their own names, so a store -> LeRobot -> store round trip is bit-exact for
low-dimensional data (same dtypes; NaNs keep their bits). ``info.json`` also carries a
``roborl`` block (env id, exact spaces, store fields), which LeRobot ignores.

Camera streams: frame ``t`` of an episode is ``obs[t]``; the episode's row in
``meta/episodes`` gives ``videos/<feature>/{chunk_index, file_index, from_timestamp,
to_timestamp}`` as LeRobot v3 does, and the feature's ``info`` the codec, pix_fmt and fps
(read back from the written file). ``next_obs`` camera frames are not written twice: inside
an episode they are the next frame; the last step's (the frame after the episode's end) goes
raw into the episode row, column ``roborl/final/<feature>`` (H*W*3 bytes), so nothing of the
store is lost. The codec is ``--video-codec`` (:data:`roborl.interop.video.VIDEO_CODECS`):
``h264`` (default, within codec tolerance), ``av1`` (LeRobot's default) or ``lossless``
(bit-exact frames).

Importing a dataset without the ``roborl`` block: ``observation.*`` features become the
observation (Box, or a Dict of them; ``observation.images.<cam>`` video features become
``pixels.<cam>`` uint8 leaves), ``next_obs`` is the next frame's observation (the last frame's
own observation at an episode's end, marked truncated unless ``next.done``), rewards default
to 0. Image features (dtype ``image``: PNG/JPEG bytes inside the parquet rows, LeRobot's
``use_videos=False``) are decoded into the same uint8 leaves.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from roborl.errors import UsageError
from roborl.interop.common import EpisodeWriter, check_fps, env_fps, iter_store_episodes, leaf_specs, require
from roborl.interop.video import VIDEO_CODECS, FrameReader, VideoWriter, probe

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")

_FIXED = {"action": "action", "executed_action": "executed_action", "reward": "next.reward",
          "terminated": "next.terminated", "truncated": "next.truncated", "is_success": "next.success",
          "intervention": "intervention", "log_prob": "log_prob", "timestamp": "wall_time"}

__all__ = ["export_store", "import_dataset", "feature_name", "CODEBASE_VERSION"]


def _is_camera(dtype: str, shape: tuple[int, ...]) -> bool:
    return np.dtype(dtype) == np.uint8 and len(shape) == 3


def feature_name(field: str, dtype: str = "float32", shape: tuple[int, ...] = ()) -> str:
    """The LeRobot feature a store field is written as (module docstring)."""
    for prefix, out in (("next_obs", "next.observation"), ("obs", "observation")):
        if field == prefix:
            return out + ".state"
        if field.startswith(prefix + "."):
            key = field[len(prefix) + 1:]
            if _is_camera(dtype, shape):
                return f"{out}.images.{key[len('pixels.'):] if key.startswith('pixels.') else key}"
            return f"{out}.{key}"
    if field in _FIXED:
        return _FIXED[field]
    return f"extra.{field}" if field in DEFAULT_FEATURES or field.startswith(("next.", "observation.")) else field


# ----------------------------------------------------------------------------- arrow helpers

def _column(pa: Any, values: np.ndarray) -> Any:
    """[N, *shape] numpy -> an arrow column: scalars as values, arrays as fixed-size lists (flattened)."""
    values = np.ascontiguousarray(values)
    if values.ndim == 1:
        return pa.array(values)
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _to_numpy(col: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """An arrow column -> [N, *shape] numpy of ``dtype`` (fixed or variable lists of numbers, or scalars)."""
    import pyarrow as pa

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    n = len(arr)
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.flatten()
    return np.asarray(arr.to_numpy(zero_copy_only=False)).astype(dtype, copy=False).reshape(n, *shape)


def _stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot stats of [N, *shape] values (reduced over frames): min, max, mean, std, count=[N]."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1) if values.ndim > 1 else \
        np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if len(x) == 0:
        z = [0.0] * x.shape[1]
        return {"min": z, "max": z, "mean": z, "std": z, "count": [0]}
    with np.errstate(invalid="ignore"):
        return {"min": np.nanmin(x, 0).tolist() if np.isfinite(x).any() else x.min(0).tolist(),
                "max": np.nanmax(x, 0).tolist() if np.isfinite(x).any() else x.max(0).tolist(),
                "mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "count": [int(len(x))]}


def _json_safe(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_safe(v) for v in o]
    return o


def _write_tasks(pa: Any, pq: Any, path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by ``task`` (LeRobot reads it with pandas)."""
    table = pa.table({"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)), "task": pa.array(tasks)})
    pandas_meta = {
        "index_columns": ["task"], "column_indexes": [],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)


# ----------------------------------------------------------------------------- export

def _image_stats(acc: dict[str, np.ndarray] | None, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Running per-channel sums of [N, H, W, C] uint8 frames (values / 255, as LeRobot's image stats)."""
    x = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    cur = {"min": x.min(0), "max": x.max(0), "sum": x.sum(0), "sumsq": (x * x).sum(0),
           "pixels": np.float64(len(x)), "count": np.float64(len(frames))}
    if acc is None:
        return cur
    return {"min": np.minimum(acc["min"], cur["min"]), "max": np.maximum(acc["max"], cur["max"]),
            "sum": acc["sum"] + cur["sum"], "sumsq": acc["sumsq"] + cur["sumsq"],
            "pixels": acc["pixels"] + cur["pixels"], "count": acc["count"] + cur["count"]}


def _image_stats_out(acc: dict[str, np.ndarray]) -> dict[str, list]:
    """LeRobot's layout of image stats: per channel, shape [C, 1, 1]; count [N frames]."""
    mean = acc["sum"] / acc["pixels"]
    std = np.sqrt(np.maximum(acc["sumsq"] / acc["pixels"] - mean * mean, 0.0))
    c = lambda v: np.asarray(v, np.float64).reshape(-1, 1, 1).tolist()  # noqa: E731
    return {"min": c(acc["min"]), "max": c(acc["max"]), "mean": c(mean), "std": c(std), "count": [int(acc["count"])]}


def export_store(store_path: Path, out: Path, *, fps: float | None = None, task: str | None = None,
                 robot_type: str | None = None, video_codec: str | None = None,
                 video_file_mb: float = VIDEO_FILES_SIZE_IN_MB, **_: Any) -> dict[str, Any]:
    """Write every live episode of the store at ``store_path`` (demo, then online) as a LeRobot v3 dataset in ``out``.

    Camera fields go to mp4 files per camera, encoded with ``video_codec`` (a VIDEO_CODECS key; default h264);
    a camera starts its next file (``file-001.mp4``, ...) at an episode boundary once its current one holds
    ``video_file_mb`` MiB (LeRobot's ``video_files_size_in_mb``), so episodes are never split across files."""
    pa = require("pyarrow")
    import pyarrow.parquet as pq

    from roborl.store import ReplayStore
    from roborl.store.schema import space_to_json

    codec = video_codec or "h264"
    if codec not in VIDEO_CODECS:
        raise UsageError(f"--video-codec: unknown codec {codec!r} (one of {', '.join(VIDEO_CODECS)})")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out}: exists and is not empty")
    store = ReplayStore.open(store_path, mode="r")
    writers: dict[str, VideoWriter] = {}
    try:
        fields = [(f.name, f.dtype, tuple(f.shape)) for f in store.fields]
        # Camera fields of obs go to mp4; those of next_obs are the next frames (plus each episode's final one).
        cams = [(n, dt, s) for n, dt, s in fields if n.startswith("obs") and _is_camera(dt, s)]
        next_cams = {"next_" + n for n, _, _ in cams}
        tab = [(n, dt, s) for n, dt, s in fields if n not in next_cams and (n, dt, s) not in cams]
        for n, dt, s in cams:
            if s[-1] != 3:
                raise UsageError(f"store field {n!r}: camera frames must be RGB [H, W, 3], got {list(s)}")
        env_rate = env_fps(store.env_id)
        if fps is None:
            fps = env_rate
            if fps is None:
                raise UsageError(f"fps: cannot read the control rate of env {store.env_id!r}; pass --fps")
        else:
            check_fps(fps, env_rate, f"env {store.env_id!r} runs")
        if abs(fps - round(fps)) > 1e-6 or round(fps) <= 0:
            raise UsageError(f"fps: LeRobot needs a whole, positive fps; the control rate is {fps:g} (pass --fps)")
        fps_i = int(round(fps))
        task_str = task or store.env_id
        features: dict[str, Any] = {}
        for name, dt, shape in tab:
            features[feature_name(name, dt, shape)] = {"dtype": np.dtype(dt).name, "shape": list(shape) or [1],
                                                       "names": None}
        cam_feat = {n: feature_name(n, dt, s) for n, dt, s in cams}
        for name, dt, shape in cams:
            features[cam_feat[name]] = {"dtype": "video", "shape": list(shape), "names": ["height", "width", "channels"]}
        features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for k in ("frame_index", "episode_index", "index", "task_index"):
            features[k] = {"dtype": "int64", "shape": [1], "names": None}

        (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        vid_loc: dict[str, tuple[int, int]] = {}  # camera -> (chunk, file) being written

        def open_video(name: str, shape: tuple[int, ...], chunk_i: int, file_i: int) -> None:
            vid_loc[name] = (chunk_i, file_i)
            writers[name] = VideoWriter(out / VIDEO_PATH.format(video_key=cam_feat[name], chunk_index=chunk_i,
                                                                file_index=file_i), shape[0], shape[1], fps_i, codec)

        for name, dt, shape in cams:
            open_video(name, shape, 0, 0)
        first_video = {name: writers[name].path for name, _, _ in cams}
        cam_stats: dict[str, Any] = {n: None for n, _, _ in cams}
        ep_rows: list[dict[str, Any]] = []
        all_cols: dict[str, list[np.ndarray]] = {}
        row_bytes = sum(np.dtype(dt).itemsize * int(np.prod(shape or (1,))) for _, dt, shape in tab) + 48
        chunk, file_idx, file_rows, file_tables = 0, 0, 0, []
        index = 0

        def flush() -> None:
            nonlocal file_tables, file_rows
            if not file_tables:
                return
            p = out / DATA_PATH.format(chunk_index=chunk, file_index=file_idx)
            p.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(file_tables), p)
            file_tables, file_rows = [], 0

        for e_i, ep in enumerate(iter_store_episodes(store)):
            T = ep.length
            if file_rows and (file_rows + T) * row_bytes > DATA_FILES_SIZE_IN_MB * 1024 * 1024:
                flush()
                file_idx += 1
                if file_idx >= CHUNKS_SIZE:
                    chunk, file_idx = chunk + 1, 0
            cols: dict[str, Any] = {}
            for name, dt, shape in tab:
                cols[feature_name(name, dt, shape)] = _column(pa, ep.rows[name])
            done = np.logical_or(ep.rows["terminated"], ep.rows["truncated"])
            cols["next.done"] = pa.array(done)
            frame = np.arange(T, dtype=np.int64)
            cols["timestamp"] = pa.array((frame / fps_i).astype(np.float32))
            cols["frame_index"] = pa.array(frame)
            cols["episode_index"] = pa.array(np.full(T, e_i, dtype=np.int64))
            cols["index"] = pa.array(np.arange(index, index + T, dtype=np.int64))
            cols["task_index"] = pa.array(np.zeros(T, dtype=np.int64))
            file_tables.append(pa.table(cols))
            file_rows += T
            row: dict[str, Any] = {"episode_index": e_i, "tasks": [task_str], "length": T,
                                   "data/chunk_index": chunk, "data/file_index": file_idx,
                                   "dataset_from_index": index, "dataset_to_index": index + T}
            for name, _dt, shape in cams:
                w = writers[name]
                if w.frames and w.path.stat().st_size >= video_file_mb * 1024 * 1024:
                    w.close()
                    ci, fi = vid_loc[name]
                    fi += 1
                    if fi >= CHUNKS_SIZE:
                        ci, fi = ci + 1, 0
                    open_video(name, shape, ci, fi)
                f, w = cam_feat[name], writers[name]
                row.update({f"videos/{f}/chunk_index": vid_loc[name][0], f"videos/{f}/file_index": vid_loc[name][1],
                            f"videos/{f}/from_timestamp": w.frames / fps_i,
                            f"videos/{f}/to_timestamp": (w.frames + T) / fps_i})
                frames = ep.rows[name]
                w.write(frames)
                row[f"roborl/final/{f}"] = np.ascontiguousarray(ep.rows["next_" + name][-1]).tobytes()
                cam_stats[name] = _image_stats(cam_stats[name], frames)
                for k, v in _image_stats_out(_image_stats(None, frames)).items():
                    row[f"stats/{f}/{k}"] = v
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                        "roborl/partition": ep.partition, "roborl/flags": ep.flags})
            for name, dt, shape in tab:
                fname = feature_name(name, dt, shape)
                vals = ep.rows[name]
                all_cols.setdefault(fname, []).append(vals)
                for k, v in _stats(vals).items():
                    row[f"stats/{fname}/{k}"] = v
            ep_rows.append(row)
            index += T
        flush()
        for w in writers.values():
            w.close()
        for name, _dt, shape in cams:
            f = cam_feat[name]
            pr = probe(first_video[name])
            features[f]["info"] = {"video.height": int(shape[0]), "video.width": int(shape[1]),
                                   "video.codec": pr["codec"], "video.pix_fmt": pr["pix_fmt"],
                                   "video.is_depth_map": False, "video.fps": fps_i, "video.channels": int(shape[2]),
                                   "has_audio": False}
        writers = {}
        n_eps = len(ep_rows)
        if n_eps:
            keys = list(ep_rows[0])
            cols_ep = {k: [r[k] for r in ep_rows] for k in keys}
            table = pa.table({k: (pa.array(v, pa.binary()) if k.startswith("roborl/final/") else v)
                              for k, v in cols_ep.items()})
        else:
            table = pa.table({"episode_index": pa.array([], pa.int64())})
        pq.write_table(table, out / EPISODES_PATH.format(chunk_index=0, file_index=0))
        _write_tasks(pa, pq, out / "meta" / "tasks.parquet", [task_str])
        stats: dict[str, Any] = {k: _stats(np.concatenate(v)) for k, v in all_cols.items()}
        for name, acc in cam_stats.items():
            if acc is not None:
                stats[cam_feat[name]] = _image_stats_out(acc)
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": n_eps,
            "total_frames": index, "total_tasks": 1, "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": int(video_file_mb) if float(video_file_mb).is_integer() else video_file_mb,
            "fps": fps_i, "splits": {"train": f"0:{n_eps}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cams else None,
            "features": features,
            "roborl": {"format": "roborl.replay_store", "env_id": store.env_id,
                       "observation_space": space_to_json(store.observation_space),
                       "action_space": space_to_json(store.action_space),
                       "fields": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in fields],
                       "extra_fields": list(store.meta.get("extra_fields", [])),
                       "video_codec": codec if cams else None},
        }
        (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
        (out / "meta" / "stats.json").write_text(json.dumps(_json_safe(stats), indent=2))
        return {"out": str(out), "format": "lerobot", "codebase_version": CODEBASE_VERSION, "episodes": n_eps,
                "frames": index, "fps": fps_i, "features": sorted(features),
                "cameras": sorted(cam_feat.values()), "video_codec": codec if cams else None}
    finally:
        for w in writers.values():
            w.close()
        store.close()


# ----------------------------------------------------------------------------- import

_FILE_RE = re.compile(r"chunk-(\d+)/file-(\d+)\.parquet$")


def read_info(src: Path) -> dict[str, Any]:
    p = Path(src) / "meta" / "info.json"
    if not p.is_file():
        raise UsageError(f"{src}: not a LeRobot dataset (no meta/info.json)")
    try:
        info = json.loads(p.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{p}: not valid JSON") from None
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise UsageError(f"{p}: codebase_version is {info.get('codebase_version')!r}; this reads {CODEBASE_VERSION!r} "
                         "(convert older datasets with LeRobot's convert_dataset_v21_to_v30)")
    for key in ("fps", "features"):
        if key not in info:
            raise UsageError(f"{p}: missing {key!r}")
    return info


def read_frames(src: Path) -> Any:
    """All data files of a dataset as one arrow table sorted by the global frame ``index``."""
    pa = require("pyarrow")
    import pyarrow.parquet as pq

    files = sorted((Path(src) / "data").glob("chunk-*/file-*.parquet"),
                   key=lambda q: tuple(int(x) for x in _FILE_RE.search(q.as_posix()).groups()))  # type: ignore[union-attr]
    if not files:
        raise UsageError(f"{src}: no data/chunk-*/file-*.parquet files")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    if "index" in table.column_names:
        order = np.argsort(table.column("index").to_numpy(), kind="stable")
        table = table.take(pa.array(order))
    return table


def _hwc(f: dict[str, Any]) -> tuple[int, int, int]:
    """[H, W, C] of a video feature (v3 writes [H, W, C]; a [C, H, W] one says so in its names)."""
    shape = [int(x) for x in f["shape"]]
    names = f.get("names") or []
    if len(shape) != 3:
        raise UsageError(f"video feature shape {shape}: expected [height, width, channels]")
    if list(names)[:1] == ["channels"]:
        return shape[1], shape[2], shape[0]
    return shape[0], shape[1], shape[2]


def _generic_spaces(features: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """(observation space, action space, obs features) of a dataset without a roborl block (unbounded Boxes;
    ``observation.images.<cam>`` video features -> ``pixels.<cam>`` uint8 Boxes)."""
    import gymnasium as gym

    def box(f: dict[str, Any]) -> Any:
        shape = tuple(int(x) for x in f["shape"])
        return gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.dtype(f["dtype"]))

    obs = [k for k in features if k.startswith("observation.")]
    cams: dict[str, Any] = {}
    for k in obs:
        if features[k]["dtype"] in ("video", "image"):
            if not k.startswith("observation.images."):
                raise UsageError(f"{features[k]['dtype']} feature {k!r}: expected a name observation.images.<camera>")
            cams[k[len("observation.images."):]] = gym.spaces.Box(0, 255, _hwc(features[k]), np.uint8)
    if not obs:
        raise UsageError("the dataset has no 'observation.*' feature")
    if "action" not in features:
        raise UsageError("the dataset has no 'action' feature")
    vec = [k for k in obs if features[k]["dtype"] not in ("video", "image")]
    if vec == ["observation.state"] and not cams:
        obs_space = box(features["observation.state"])
    else:
        d: dict[str, Any] = {k[len("observation."):]: box(features[k]) for k in vec}
        if cams:
            if "pixels" in d:
                raise UsageError("feature 'observation.pixels' clashes with the camera group 'pixels'")
            d["pixels"] = gym.spaces.Dict(cams)
        obs_space = gym.spaces.Dict(d)
    return obs_space, box(features["action"]), obs


def _decode_images(column: Any, what: str, shape: tuple[int, ...]) -> np.ndarray:
    """An ``image`` feature's column (struct {bytes, path} of encoded frames) -> [N, H, W, C] uint8."""
    import io

    import imageio.v3 as iio
    import pyarrow as pa

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_struct(arr.type):
        if arr.type.get_field_index("bytes") < 0:
            raise UsageError(f"camera {what!r}: image column has no 'bytes' field")
        arr = arr.field("bytes")
    out = np.empty((len(arr), *shape), np.uint8)
    for i, b in enumerate(arr.to_pylist()):
        if b is None:
            raise UsageError(f"camera {what!r}: row {i} holds no image bytes (images stored outside the parquet "
                             "files are not read)")
        try:
            img = np.asarray(iio.imread(io.BytesIO(b)))
        except Exception as e:
            raise UsageError(f"camera {what!r}: row {i} is not a readable image ({type(e).__name__})") from None
        if img.ndim == 2:
            img = img[:, :, None]
        if img.shape != shape or img.dtype != np.uint8:
            raise UsageError(f"camera {what!r}: row {i} is a {img.dtype}{list(img.shape)} image, the feature says "
                             f"uint8{list(shape)}")
        out[i] = img
    return out


def _read_episode_meta(src: Path) -> dict[int, dict[str, Any]]:
    """meta/episodes/*/*.parquet -> {episode_index: row}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((Path(src) / "meta" / "episodes").glob("chunk-*/file-*.parquet"),
                   key=lambda q: tuple(int(x) for x in _FILE_RE.search(q.as_posix()).groups()))  # type: ignore[union-attr]
    if not files:
        raise UsageError(f"{src}: no meta/episodes/chunk-*/file-*.parquet (needed to locate the camera streams)")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    return {int(r["episode_index"]): r for r in table.to_pylist()}


def import_dataset(src: str, store_path: Path, partition: str = "demo", *, fps: float | None = None,
                   env: str | None = None, **_: Any) -> dict[str, Any]:
    """Append every episode of the LeRobot v3 dataset at ``src`` to the store (created when missing)."""
    require("pyarrow")
    from roborl.store.schema import space_from_json

    src_p = Path(src)
    info = read_info(src_p)
    features: dict[str, Any] = info["features"]
    ds_fps = float(info["fps"])
    if fps is not None:
        check_fps(ds_fps, fps, "--fps says")
    rb = info.get("roborl") if isinstance(info.get("roborl"), dict) else None
    if rb is not None:
        obs_space = space_from_json(rb["observation_space"])
        act_space = space_from_json(rb["action_space"])
        env_id = env or rb["env_id"]
        store_fields = {f["name"]: (f["dtype"], tuple(f["shape"])) for f in rb["fields"]}
        extras = {n: store_fields[n] for n in rb.get("extra_fields", []) if n in store_fields}
    else:
        obs_space, act_space, _obs = _generic_spaces(features)
        env_id = env or str(info.get("robot_type") or f"lerobot:{src_p.name}")
        extras = {}
    if env is not None:
        import gymnasium as gym

        check_fps(ds_fps, env_fps(env), f"env {env!r} runs")
        try:
            from roborl.envs.make import make_env

            e = make_env(env)
        except UsageError:
            raise
        except Exception as ex:
            raise UsageError(f"--env {env!r}: cannot be built ({type(ex).__name__})") from None
        try:
            for name, space in (("observation", e.observation_space), ("action", e.action_space)):
                have = leaf_specs(obs_space if name == "observation" else act_space, "x")
                want = leaf_specs(space, "x")
                if {k: v[1] for k, v in have.items()} != {k: v[1] for k, v in want.items()}:
                    raise UsageError(f"{name}_space: the dataset has {sorted(have.items())} but env {env!r} has "
                                     f"{sorted(want.items())}")
                if isinstance(space, gym.spaces.Box) and isinstance(obs_space if name == "observation" else act_space,
                                                                    gym.spaces.Box):
                    if name == "observation":
                        obs_space = gym.spaces.Box(space.low, space.high, space.shape, obs_space.dtype)
                    else:
                        act_space = gym.spaces.Box(space.low, space.high, space.shape, act_space.dtype)
        finally:
            e.close()

    obs_leaves = leaf_specs(obs_space, "obs")
    act_leaves = leaf_specs(act_space, "action")
    cams: dict[str, str] = {}  # store field -> video feature
    img_cams: dict[str, str] = {}  # store field -> image feature (encoded frames in the parquet rows)
    for name, (dt, shape) in {**obs_leaves, **act_leaves}.items():
        fname = feature_name(name, dt, shape)
        if fname not in features:
            what = "camera" if _is_camera(dt, shape) else "feature"
            raise UsageError(f"the dataset has no {what} {fname!r} (store field {name!r})")
        f = features[fname]
        if _is_camera(dt, shape) and f.get("dtype") == "image":
            have = _hwc(f)
            img_cams[name] = fname
        elif _is_camera(dt, shape):
            if f.get("dtype") != "video":
                raise UsageError(f"camera {fname!r}: dtype {f.get('dtype')!r} in the dataset; 'video' or 'image' "
                                 "features are imported")
            have = _hwc(f)
            vfps = (f.get("info") or {}).get("video.fps")
            if vfps is not None and abs(float(vfps) - ds_fps) > 1e-6 * max(1.0, ds_fps):
                raise UsageError(f"fps: camera {fname!r} has video.fps {float(vfps):g} but the dataset's fps is "
                                 f"{ds_fps:g}")
            if not info.get("video_path"):
                raise UsageError(f"camera {fname!r}: meta/info.json has no 'video_path'")
            cams[name] = fname
        else:
            have = tuple(int(x) for x in f["shape"])
        if have != (tuple(shape) or (1,)):
            raise UsageError(f"feature {fname!r}: shape {list(have)} in the dataset but {list(shape)} for the "
                             f"observation/action space")
    ep_meta = _read_episode_meta(src_p) if cams else {}

    table = read_frames(src_p)
    n = table.num_rows
    if "episode_index" not in table.column_names:
        raise UsageError(f"{src_p}: data files have no 'episode_index' column")
    ep_idx = table.column("episode_index").to_numpy()

    def col(fname: str, dt: str, shape: tuple[int, ...]) -> np.ndarray:
        if fname not in table.column_names:
            raise UsageError(f"the dataset's data files have no column {fname!r}")
        return _to_numpy(table.column(fname), dt, shape)

    cols: dict[str, np.ndarray] = {}
    for name, (dt, shape) in {**obs_leaves, **act_leaves}.items():
        if name in img_cams:
            if img_cams[name] not in table.column_names:
                raise UsageError(f"camera {img_cams[name]!r}: the dataset's data files have no such column")
            cols[name] = _decode_images(table.column(img_cams[name]), img_cams[name], tuple(shape))
        elif name not in cams:
            cols[name] = col(feature_name(name, dt, shape), dt, shape)
    for name, (dt, shape) in obs_leaves.items():
        if name in cams:
            continue
        fname = feature_name("next_" + name, dt, shape)
        if fname in table.column_names:
            cols["next_" + name] = col(fname, dt, shape)
    opt = {"reward": ("float32", ()), "terminated": ("bool", ()), "truncated": ("bool", ()), "is_success": ("bool", ()),
           "intervention": ("bool", ()), "log_prob": ("float32", ()), "timestamp": ("float64", ()),
           "executed_action": act_leaves["action"]}
    if rb is not None:
        opt.update({n: (d, s) for n, (d, s) in store_fields.items() if n in opt})
    for name, (dt, shape) in {**opt, **extras}.items():
        fname = feature_name(name, dt, shape)
        if fname in table.column_names:
            cols[name] = col(fname, dt, shape)
    if "terminated" not in cols and "next.done" in table.column_names:
        cols["terminated"] = col("next.done", "bool", ())

    # Episode boundaries: contiguous runs of episode_index.
    bounds = np.flatnonzero(np.diff(ep_idx)) + 1
    starts = np.concatenate([[0], bounds]) if n else np.zeros(0, dtype=np.int64)
    stops = np.concatenate([bounds, [n]]) if n else np.zeros(0, dtype=np.int64)
    # Camera streams: every episode's video locator, and the files opened (and their frame size checked)
    # before the store is touched, so a missing camera file leaves no store behind.
    locs: dict[tuple[str, int], tuple[Path, int, bytes | None]] = {}
    readers: dict[Path, FrameReader] = {}
    try:
        for name, fname in cams.items():
            h, w, c = (int(x) for x in obs_leaves[name][1])
            for a in starts:
                e = int(ep_idx[a])
                row = ep_meta.get(e)
                keys = [f"videos/{fname}/{k}" for k in ("chunk_index", "file_index", "from_timestamp")]
                if row is None or any(row.get(k) is None for k in keys):
                    raise UsageError(f"camera {fname!r}: meta/episodes has no {keys[-1]!r} for episode {e}")
                path = src_p / str(info["video_path"]).format(video_key=fname, chunk_index=int(row[keys[0]]),
                                                              file_index=int(row[keys[1]]))
                if path not in readers:
                    readers[path] = FrameReader(path, fname)
                    if readers[path].shape != (h, w, c):
                        raise UsageError(f"camera {fname!r}: {path} has frames {list(readers[path].shape)} but the "
                                         f"feature says {[h, w, c]}")
                final = row.get(f"roborl/final/{fname}")
                if final is not None and len(final) != h * w * c:
                    raise UsageError(f"camera {fname!r}: roborl/final of episode {e} has {len(final)} bytes, not {h * w * c}")
                locs[(name, e)] = (path, int(round(float(row[keys[2]]) * ds_fps)), final)
        writer = EpisodeWriter(Path(store_path), env_id, obs_space, act_space, partition, extras,
                               source=f"LeRobot dataset {src_p}")
    except BaseException:
        for r in readers.values():
            r.close()
        raise
    try:
        for a, b in zip(starts, stops):
            T = int(b - a)
            ep = {k: v[a:b] for k, v in cols.items()}
            for name in cams:
                path, first, final = locs[(name, int(ep_idx[a]))]
                frames = readers[path].read(first, T)
                ep[name] = frames
                last = np.frombuffer(final, np.uint8).reshape(frames.shape[1:]) if final is not None else frames[-1]
                ep["next_" + name] = np.concatenate([frames[1:], last[None]])
            for name in obs_leaves:
                if "next_" + name not in ep:
                    nxt = np.concatenate([ep[name][1:], ep[name][-1:]])  # next frame; last: its own obs
                    ep["next_" + name] = nxt
            ep.setdefault("reward", np.zeros(T, np.float32))
            ep.setdefault("terminated", np.zeros(T, bool))
            if "truncated" not in ep:
                tr = np.zeros(T, bool)
                tr[-1] = not bool(ep["terminated"][-1])
                ep["truncated"] = tr
            writer.write(ep)
        return {"store": str(store_path), "format": "lerobot", "partition": partition, "episodes": writer.episodes,
                "steps": writer.steps, "fps": ds_fps, "env_id": writer.store.env_id,
                "cameras": sorted(cams.values())}
    finally:
        writer.close()
        for r in readers.values():
            r.close()
