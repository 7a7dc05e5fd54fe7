"""On-disk layout of a store: meta.json, COMMIT.json, the zarr arrays and their chunk files.

See :mod:`roborl.store.store` for the directory tree. Nothing here holds state.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from roborl.store.index import PARTITIONS
from roborl.store.schema import FieldSpec, StoreError

# 1: every row holds obs and next_obs. 2 ("frames once"): rows hold obs only; next_obs[t] is
# obs[t + 1] of the same episode, and the last step's next observation is kept once per ended
# episode in <partition>/_final_<obs field> [n_eps, *leaf shape]. Both are read; new stores are 2.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FINAL_PREFIX = "_final_"
EPISODE_CHUNK = 16384  # rows per chunk of the <partition>/_episodes [n, 3] index
EPISODES_SPEC = FieldSpec("_episodes", "int64", (3,))


def zarr_codecs(f: FieldSpec) -> list[Any]:
    """zstd with a content checksum: a corrupt chunk raises on read instead of returning garbage.

    Images use a faster level (they dominate the write cost).
    """
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=1 if f.is_image else 3, checksum=True)]


def auto_chunk_rows(fields: list[FieldSpec]) -> int:
    """~4 MiB of the largest field per chunk, a power of two in [16, 16384]."""
    biggest = max(int(np.prod(f.shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize for f in fields)
    rows = max(1, (4 << 20) // max(1, biggest))
    p = 1 << (rows.bit_length() - 1)
    return int(min(16384, max(16, p)))


def final_chunk_rows(finals: list[FieldSpec]) -> int:
    """Episodes per chunk of the final-observation arrays: 1/16 of the row rule in [16, 1024], as
    each commit rewrites the last, partly filled chunk (16 for camera frames)."""
    return int(min(1024, max(16, auto_chunk_rows(finals) // 16))) if finals else 64


def create_arrays(data_dir: Path, fields: list[FieldSpec], chunk_rows: int,
                  finals: list[FieldSpec] = (), final_chunk: int = 64) -> None:  # type: ignore[assignment]
    """Empty ``<partition>/<field>``, ``<partition>/_episodes`` and final-obs arrays under ``data_dir``."""
    import zarr

    root = zarr.open_group(str(data_dir), mode="w")
    for part in PARTITIONS:
        g = root.create_group(part)
        for f in fields:
            g.create_array(f.name, shape=(0, *f.shape), chunks=(chunk_rows, *f.shape), dtype=f.dtype,
                           compressors=zarr_codecs(f), fill_value=np.zeros((), f.dtype).item())
        g.create_array("_episodes", shape=(0, 3), chunks=(EPISODE_CHUNK, 3), dtype="int64",
                       compressors=zarr_codecs(EPISODES_SPEC), fill_value=0)
        for f in finals:
            g.create_array(f.name, shape=(0, *f.shape), chunks=(final_chunk, *f.shape), dtype=f.dtype,
                           compressors=zarr_codecs(f), fill_value=np.zeros((), f.dtype).item())


def empty_commit(version: int = FORMAT_VERSION) -> dict[str, Any]:
    return {"format_version": version, "generation": 0, "wal": None, "merged": [],
            "partitions": {n: {"rows": 0, "episodes": 0, "head_row": 0, "head_episode": 0, "freed_chunks": 0}
                           for n in PARTITIONS}}


def read_meta(p: Path) -> dict[str, Any]:
    """meta.json, checked for the format this roborl reads (StoreError naming the problem)."""
    try:
        meta = json.loads((p / "meta.json").read_text())
    except FileNotFoundError:
        raise StoreError(f"store {p}: not a replay store (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(f"store {p}: meta.json is corrupt") from None
    if meta.get("format") != "roborl.replay_store" or meta.get("format_version") not in READABLE_VERSIONS:
        raise StoreError(f"store {p}: meta.json format_version is {meta.get('format_version')!r}, "
                         f"this roborl reads {' and '.join(map(str, READABLE_VERSIONS))}")
    return meta


def read_commit(p: Path) -> dict[str, Any]:
    try:
        return json.loads((p / "COMMIT.json").read_text())
    except FileNotFoundError:
        raise StoreError(f"store {p}: COMMIT.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(f"store {p}: COMMIT.json is corrupt") from None


def acquire_lock(p: Path) -> int:
    """flock ``p/LOCK`` for the one writer -> fd (StoreError when another process holds it)."""
    fd = os.open(p / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"store {p}: open for writing by another process (LOCK held); "
                         f"open it with mode='r' to read") from None
    return fd


def release_lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def wal_side_file(wal_name: str) -> str:
    """Where a WAL's bytes from a corrupt record on are kept (not matched by ``wal-*.log``)."""
    return wal_name + ".after-corruption"


def chunk_path(root: Path, partition: str, f: FieldSpec, ci: int) -> Path:
    """File of chunk ``ci`` (rows [ci * chunk_rows, (ci + 1) * chunk_rows)) of one array."""
    key = "/".join(["c", str(ci)] + ["0"] * len(f.shape))
    return root / "data.zarr" / partition / f.name / key
