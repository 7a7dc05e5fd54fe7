"""A persistent, crash-safe replay store on zarr with a demo and an online partition.

Directory layout::

    meta.json        format version, env id, spaces, field schema, chunk rows, uuid, creation time
    COMMIT.json      the committed state, replaced atomically (temp file, fsync, rename):
                     generation, the WAL in use, per partition the committed rows,
                     episodes and the eviction head, and per named stream its rows
    wal-<gen>.log    write-ahead log of steps not yet flushed into zarr (see wal.py)
    LOCK             flock()ed by the one writer process (released by the kernel on kill -9)
    data.zarr/       <partition>/<field> arrays, one row per transition, plus
                     <partition>/_episodes [n, 3] int64 (start row, length, flags), and
                     (format 2) <partition>/_final_<obs field> [n, *leaf shape]: the next
                     observation of each ended episode's last step

Frames once (format 2, what ``create`` makes): a row stores ``obs`` but not ``next_obs``; the
next observation of step t is ``obs[t + 1]`` of the same episode, and the last step's (for
terminated, truncated and interrupted endings alike) is kept once per episode in the
``_final_*`` arrays. ``read_rows`` still returns ``next_obs`` fields, rebuilt exactly (plain
formula: ``next_obs[t] = obs[t + 1] if t + 1 < episode_end else final[episode(t)]``), so
callers see the same columns as with format 1. Format-1 stores (obs and next_obs in every
row) are read and appended as they are; merging copies between the formats. The WAL record of
a step stays the whole row (with next_obs): a crash after the step must still know its next
observation; each new WAL therefore starts with a copy of the open episode's last flushed row.

Rows are indexed by a *logical* row number that only grows: the online partition evicts
whole oldest episodes by advancing its head and deleting the zarr chunks that lie wholly
before it, so disk use stays bounded while no row is ever moved.

Commit protocol (one writer, any number of readers):

1. ``add_step`` writes one CRC-framed WAL record with ``os.write`` and returns: from then
   on the step survives ``kill -9`` (the page cache outlives the process).
2. When the partition's pending rows reach a zarr chunk boundary (``chunk_rows``), all
   pending rows are written into zarr (chunk-aligned), fsynced (policy), and a new
   COMMIT.json naming a fresh empty WAL is renamed into place. The old WAL is deleted.
3. The committed length lives only in COMMIT.json, never in an array's shape: zarr v3
   writes the new shape before the data, so a killed append leaves fill-value rows.

Reopen after a crash (mode "a"): remove ``*.partial`` / ``*.tmp`` leftovers and WAL files
not named by the commit, replay the valid WAL records, cut a torn tail, close an episode
that was open at the crash as *interrupted* (it bootstraps at its end, like a
truncation), and commit. Read-only opens (mode "r") see the last commit and never write.

Corruption is never read silently (checks at open and load time, none per append or sample):
an open checks COMMIT.json, each array's zarr.json against meta.json, the committed rows
against the arrays and the episode index (its chunks must exist and decode, and its episodes
must be contiguous within the committed rows); every committed row read (``read_rows``: the
sampler's RAM mirror, merges, verify) checks that its chunks exist (zarr would return fill
values) and names the chunk that fails to decode; ``info`` and ``verify --quick`` check that
every live chunk is a whole zstd frame (integrity.py). All raise :class:`StoreCorruptError`
(one line, exit 2 in the CLI). A WAL with a bad record followed by valid ones is not a torn
tail: writable opens refuse until ``roborl store repair`` (repair.py).

Modules: ``index`` (the per-partition episode index, the public read API for samplers and
tools), ``layout`` (files and arrays), ``recovery`` (crash leftovers and WAL replay on a
writable open), ``merge`` (copying another store in), ``integrity`` (chunk file checks),
``repair``, ``wal``; this module is the facade.

Episode semantics: an episode is visible to samplers once it has ended (terminated or
truncated step, ``start_episode`` on an open one, or recovery). A discarded episode
never reaches disk or a batch.

Streams (several open episodes in one writer, one per named stream, e.g. per actor of a
learner): ``start_episode(obs, stream=name)``, ``add_step(..., stream=name)`` or the batch
``add_steps(rows, stream=name)``. A stream's open episode lives in memory and is written whole
when it ends: one WAL record (``wal.encode_stream``; one CRC, so it replays whole or not at
all) naming the stream and its new row count, then its rows at the partition's end. COMMIT.json
keeps ``streams`` {name: rows of its ended episodes}; ``stream_rows(name)`` reads it back after
any crash, so acknowledging up to it is exactly once.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import gymnasium as gym
import numpy as np

from roborl.fsutil import atomic_write_text, fsync_path
from roborl.store import merge as mergemod
from roborl.store import recovery
from roborl.store import wal as walmod
from roborl.store.index import (EP_INTERRUPTED, EP_SUCCESS, EP_TERMINATED, EP_TRUNCATED, PART_ID, PARTITIONS,
                                PartitionIndex)
from roborl.store.integrity import chunk_problem
from roborl.store.layout import (EPISODE_CHUNK, EPISODES_SPEC, FINAL_PREFIX, FORMAT_VERSION, acquire_lock,
                                 auto_chunk_rows, chunk_path, create_arrays, empty_commit, final_chunk_rows,
                                 read_commit, read_meta, release_lock)
from roborl.store.schema import (OPTIONAL_FIELDS, FieldSpec, StoreCorruptError, StoreError, WalCorruptError,
                                 build_fields, compare_spaces, obs_keys, row_dtype, space_from_json, space_to_json)

# Re-exported: callers import the flags and partition names from here.
__all__ = ["ReplayStore", "PartitionIndex", "PARTITIONS", "PART_ID", "EP_SUCCESS", "EP_TERMINATED", "EP_TRUNCATED",
           "EP_INTERRUPTED", "FORMAT_VERSION", "auto_chunk_rows"]

Partition = Literal["demo", "online"]


@dataclass
class _Part(PartitionIndex):
    """A partition's index plus its zarr arrays and the pending (not yet flushed) block."""

    arrays: dict[str, Any] = field(default_factory=dict)   # field -> zarr array
    episodes_arr: Any = None                                # zarr [n, 3] int64
    pending: np.ndarray | None = None  # structured [chunk_rows]
    n_pend: int = 0
    final_arrays: dict[str, Any] = field(default_factory=dict)  # final-obs field -> zarr [n_eps, *shape] (format 2)
    final_pend: list = field(default_factory=list)  # next obs (one array per obs field) of episodes [eps_flushed, n_eps)
    last_row: np.ndarray | None = None  # the whole (structured [1]) row last appended: its next_obs ends an episode


@dataclass
class _Stream:
    """The open episode of one named stream (an actor): rows held in memory until it ends."""

    partition: str
    cur_obs: list[np.ndarray]
    rows: list[np.ndarray] = field(default_factory=list)  # structured [k] blocks of rows
    n: int = 0  # rows in ``rows``
    flags: int = 0


class ReplayStore:
    """Crash-safe transition store. Use :meth:`create`, :meth:`open` or :meth:`open_or_create`.

    One row per transition with fields (``B`` = rows): ``obs`` [B, *obs_shape] (or one
    ``obs.<key>`` per Dict leaf), ``action`` / ``executed_action`` [B, *act_shape],
    ``reward`` [B] float32, ``next_obs`` like obs, ``terminated`` / ``truncated`` [B] bool,
    ``is_success`` / ``intervention`` [B] bool, ``log_prob`` [B] float32 (NaN when not
    given), ``timestamp`` [B] float64 (``time.time()`` when not given), and any extra fields.
    """

    # ------------------------------------------------------------------ construction

    def __init__(self, path: Path, meta: dict[str, Any], mode: str, fsync: str = "commit",
                 fsync_interval_s: float = 1.0) -> None:
        self.path = path
        self.meta = meta
        self.mode = mode
        self.fsync_policy = fsync
        self.fsync_interval_s = float(fsync_interval_s)
        self.fields = [FieldSpec.from_json(f) for f in meta["fields"]]
        self.field_names = [f.name for f in self.fields]
        self.dtype = row_dtype(self.fields)
        self.chunk_rows = int(meta["chunk_rows"])
        self.env_id: str = meta["env_id"]
        self.observation_space = space_from_json(meta["observation_space"])
        self.action_space = space_from_json(meta["action_space"])
        self.obs_keys = obs_keys(self.observation_space)  # [""] for a Box
        self.online_capacity = int(meta["online_capacity"])
        self.generation = 0
        self.merged: list[str] = []
        self.parts: dict[str, _Part] = {n: _Part(n, PART_ID[n]) for n in PARTITIONS}
        self._lock_fd: int | None = None
        self._wal: walmod.WalWriter | None = None
        self._wal_name: str | None = None
        self._last_fsync = time.monotonic()
        # The open episode.
        self._open: str | None = None
        self._cur_obs: list[np.ndarray] | None = None
        self._open_len = 0
        self._open_flags = 0
        self._buffered = False
        self._buf: list[bytes] = []
        self._buf_rows: list[np.ndarray] = []
        self.recovered: dict[str, Any] = {}
        # Named streams (one open episode each; see start_episode(stream=...)) and the rows of each
        # stream's ended episodes, persisted in COMMIT.json and in each stream episode's WAL record.
        self._streams: dict[str, _Stream] = {}
        self._stream_rows: dict[str, int] = {}
        self._group: Any = None
        self._closed = False
        self._replay_flags: dict[str, int] = {}  # success flags of episodes rebuilt from the WAL
        self._spec = {f.name: f for f in self.fields}
        self.obs_fields: list[str] = [("obs." + k) if k else "obs" for k in self.obs_keys]
        self.next_obs_fields: list[str] = [("next_obs." + k) if k else "next_obs" for k in self.obs_keys]
        self.format_version = int(meta["format_version"])
        self.frames_once = self.format_version >= 2
        # Fields with a zarr array per row; format 2 rebuilds next_obs (the virtual fields) on read.
        self.virtual_fields = set(self.next_obs_fields) if self.frames_once else set()
        self.stored_fields = [f for f in self.fields if f.name not in self.virtual_fields]
        self.final_fields = [FieldSpec(FINAL_PREFIX + n, self._spec[n].dtype, self._spec[n].shape)
                             for n in self.obs_fields] if self.frames_once else []
        self.final_chunk = int(meta.get("final_chunk_rows", 64))
        self._spec.update({f.name: f for f in self.final_fields})

    @classmethod
    def create(cls, path: str | Path, *, env_id: str, observation_space: gym.Space, action_space: gym.Space,
               online_capacity: int = 1_000_000, extra_fields: dict | None = None, chunk_rows: int | None = None,
               fsync: str = "commit", fsync_interval_s: float = 1.0,
               format_version: int = FORMAT_VERSION) -> "ReplayStore":
        """Create a new, empty store directory. Fails if ``path`` already holds a store or files.

        ``format_version`` 1 (obs and next_obs in every row) is for compatibility tests and
        benchmarks only."""
        p = Path(path)
        if (p / "meta.json").exists():
            raise StoreError(f"store {p}: already exists (meta.json); use ReplayStore.open")
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise StoreError(f"store {p}: path exists and is not an empty directory")
        if online_capacity <= 0:
            raise StoreError(f"store {p}: online_capacity must be > 0, got {online_capacity}")
        fields = build_fields(observation_space, action_space, extra_fields)
        okeys = {("obs." + k) if k else "obs" for k in obs_keys(observation_space)}
        if format_version not in (1, 2):
            raise StoreError(f"store {p}: format_version must be 1 or 2, got {format_version!r}")
        nkeys = {"next_" + k for k in okeys} if format_version >= 2 else set()
        stored = [f for f in fields if f.name not in nkeys]
        finals = [FieldSpec(FINAL_PREFIX + f.name, f.dtype, f.shape) for f in fields
                  if f.name in okeys and format_version >= 2]
        cr = int(chunk_rows) if chunk_rows else auto_chunk_rows(stored)
        fcr = final_chunk_rows(finals)
        meta = {
            "format": "roborl.replay_store",
            "format_version": int(format_version),
            "uuid": uuid.uuid4().hex,
            "env_id": env_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "observation_space": space_to_json(observation_space),
            "action_space": space_to_json(action_space),
            "fields": [f.to_json() for f in fields],
            "extra_fields": sorted((extra_fields or {}).keys()),
            "chunk_rows": cr,
            "final_chunk_rows": fcr,
            "online_capacity": int(online_capacity),
        }
        # Build the whole store in a hidden sibling directory and rename it into place, so a
        # crash during creation leaves no half-made store at ``path`` (found by the kill -9 test).
        p.parent.mkdir(parents=True, exist_ok=True)
        for stale in p.parent.glob(f".{p.name}.creating-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = p.parent / f".{p.name}.creating-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        create_arrays(tmp / "data.zarr", stored, cr, finals, fcr)
        commit = dict(empty_commit(format_version), time=time.time())
        atomic_write_text(tmp / "COMMIT.json", json.dumps(commit))
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
        if fsync != "never":
            for root_dir, _, files in os.walk(tmp):
                for fn in files:
                    fsync_path(Path(root_dir) / fn)
                fsync_path(Path(root_dir))
        try:
            os.replace(tmp, p)  # atomic; replaces an empty directory
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"store {p}: could not create (path exists and is not an empty directory)") from None
        fsync_path(p.parent)
        return cls.open(p, mode="a", fsync=fsync, fsync_interval_s=fsync_interval_s)

    @classmethod
    def open(cls, path: str | Path, *, mode: Literal["r", "a"] = "a", observation_space: gym.Space | None = None,
             action_space: gym.Space | None = None, fsync: str = "commit", fsync_interval_s: float = 1.0,
             online_capacity: int | None = None) -> "ReplayStore":
        """Open an existing store. ``mode="r"`` never writes and works while a writer is active.

        Given spaces are checked against the store's metadata; a mismatch raises
        StoreError naming the field. ``online_capacity`` (writers only) changes the bound.
        """
        p = Path(path)
        if mode not in ("r", "a"):
            raise StoreError(f"store {p}: mode must be 'r' or 'a', got {mode!r}")
        if not p.is_dir():
            raise StoreError(f"store not found: {p}")
        meta = read_meta(p)
        for name, given in (("observation_space", observation_space), ("action_space", action_space)):
            if given is not None:
                why = compare_spaces(meta[name], given, name)
                if why:
                    raise StoreError(f"store {p}: schema mismatch: {why}")
        if online_capacity is not None and mode == "a":
            meta = dict(meta, online_capacity=int(online_capacity))
        store = cls(p, meta, mode, fsync=fsync, fsync_interval_s=fsync_interval_s)
        if mode == "a":
            store._acquire_lock()
            if online_capacity is not None:
                atomic_write_text(p / "meta.json", json.dumps(meta, indent=1))
        try:
            store._load()
        except BaseException:
            store._release_lock()
            raise
        return store

    @classmethod
    def open_or_create(cls, path: str | Path, *, env_id: str, observation_space: gym.Space, action_space: gym.Space,
                       online_capacity: int = 1_000_000, extra_fields: dict | None = None, **kw: Any) -> "ReplayStore":
        """Open (and verify spaces) when ``path`` holds a store, else create it. For resume."""
        p = Path(path)
        if (p / "meta.json").exists():
            st = cls.open(p, mode="a", observation_space=observation_space, action_space=action_space,
                          online_capacity=online_capacity, **{k: v for k, v in kw.items() if k != "chunk_rows"})
            if st.env_id != env_id:
                st.close()
                raise StoreError(f"store {p}: schema mismatch: env_id is {st.env_id!r} in the store but {env_id!r} for the run")
            return st
        return cls.create(p, env_id=env_id, observation_space=observation_space, action_space=action_space,
                          online_capacity=online_capacity, extra_fields=extra_fields, **kw)

    # ------------------------------------------------------------------ locking / files

    def _acquire_lock(self) -> None:
        self._lock_fd = acquire_lock(self.path)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            release_lock(fd)

    def _open_zarr(self) -> None:
        import zarr

        where = "data.zarr"
        try:
            self._group = zarr.open_group(str(self.path / "data.zarr"), mode="r" if self.mode == "r" else "r+")
            for name, part in self.parts.items():
                where = f"data.zarr/{name}"
                g = self._group[name]
                # write_empty_chunks: zarr skips chunks equal to the fill value by default, which
                # would make an all-False column indistinguishable from a missing (lost) chunk.
                for f in self.stored_fields + [EPISODES_SPEC] + self.final_fields:
                    where = f"data.zarr/{name}/{f.name}"
                    arr = g[f.name].with_config({"write_empty_chunks": True})
                    # An edited zarr.json would make zarr decode the chunks as something else.
                    if np.dtype(arr.dtype) != np.dtype(f.dtype) or tuple(arr.shape[1:]) != f.shape:
                        raise StoreCorruptError(
                            f"store {self.path}: {where}/zarr.json says {arr.dtype} {list(arr.shape[1:])} per row, "
                            f"meta.json says {f.dtype} {list(f.shape)}")
                    if f is EPISODES_SPEC:
                        part.episodes_arr = arr
                    elif f.name.startswith(FINAL_PREFIX):
                        part.final_arrays[f.name] = arr
                    else:
                        part.arrays[f.name] = arr
                if part.pending is None and self.mode == "a":
                    part.pending = np.zeros(self.chunk_rows, dtype=self.dtype)
        except (KeyError, FileNotFoundError) as e:
            raise StoreCorruptError(f"store {self.path}: data.zarr is missing array {e}") from None
        except StoreError:
            raise
        except Exception as e:  # a damaged zarr.json: zarr raises JSON, value or type errors
            raise StoreCorruptError(f"store {self.path}: {where}/zarr.json is unreadable: "
                                    f"{type(e).__name__}: {_first_line(e)}") from None

    def _apply_commit(self, c: dict[str, Any]) -> None:
        try:
            self.generation = int(c["generation"])
            self.merged = list(c.get("merged", []))
            self._wal_name = c.get("wal")
            self._stream_rows = {str(k): int(v) for k, v in c.get("streams", {}).items()}
            for name, part in self.parts.items():
                d = c["partitions"][name]
                part.rows = part.end = int(d["rows"])
                part.head_row = int(d["head_row"])
                part.head_ep = int(d["head_episode"])
                part.n_eps = part.eps_flushed = int(d["episodes"])
                part.freed_chunks = int(d.get("freed_chunks", 0))
                part.n_pend = 0
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreCorruptError(f"store {self.path}: COMMIT.json is malformed "
                                    f"({type(e).__name__}: {_first_line(e)})") from None
        if self._wal_name is not None and (not isinstance(self._wal_name, str) or "/" in self._wal_name):
            raise StoreCorruptError(f"store {self.path}: COMMIT.json names a bad WAL {self._wal_name!r}")

    def _load(self) -> None:
        c = read_commit(self.path)
        removed = recovery.cleanup_temp_files(self.path, c, self.chunk_rows, [f.name for f in self.stored_fields],
                                              {f.name: self.final_chunk for f in self.final_fields}) \
            if self.mode == "a" else []
        self._open_zarr()
        self._apply_commit(c)
        for name, part in self.parts.items():
            n = part.n_eps
            if part.episodes_arr.shape[0] < n or n < 0:
                raise StoreCorruptError(f"store {self.path}: COMMIT.json says {name} has {n} episodes but "
                                        f"data.zarr/{name}/_episodes holds {part.episodes_arr.shape[0]}")
            for f in self.final_fields:
                if part.final_arrays[f.name].shape[0] < n:
                    raise StoreCorruptError(f"store {self.path}: COMMIT.json says {name} has {n} episodes but "
                                            f"data.zarr/{name}/{f.name} holds {part.final_arrays[f.name].shape[0]}")
            for f in self.stored_fields:
                if part.arrays[f.name].shape[0] < part.rows or part.rows < 0:
                    raise StoreCorruptError(f"store {self.path}: COMMIT.json says {name} has {part.rows} rows but "
                                            f"data.zarr/{name}/{f.name} holds {part.arrays[f.name].shape[0]}")
            table = self._read_checked(part, "_episodes", 0, n, EPISODE_CHUNK) if n else np.zeros((0, 3), np.int64)
            part.load_table(np.asarray(table, dtype=np.int64))
            bad = part.table_problems()
            if bad:
                raise StoreCorruptError(f"store {self.path}: data.zarr/{name}/_episodes disagrees with COMMIT.json: "
                                        f"{bad[0]}")
            part.open_start = int(part.episode_ends(n - 1, n)[0]) if n else part.head_row
        if self.mode == "r":
            return
        self.recovered = recovery.recover(self, removed)
        if (self.recovered["replayed_steps"] or self.recovered["torn_bytes"]
                or self.recovered["interrupted_episodes"] or self._wal_name):
            # Make the recovered state durable and start without a WAL (a fresh one on the first step).
            self._commit(new_wal=False)

    # ------------------------------------------------------------------ writing

    def _check_writable(self) -> None:
        if self.mode != "a" or self._closed:
            raise StoreError(f"store {self.path}: opened read-only (mode='r') or closed; cannot write")

    def start_episode(self, obs: Any, partition: Partition = "online", *, buffered: bool = False,
                      stream: str | None = None) -> None:
        """Begin an episode whose first observation is ``obs``.

        An episode still open is ended first: kept as *interrupted* (it bootstraps at its
        last step) or, when it was ``buffered``, discarded. ``buffered=True`` keeps the
        steps in memory and writes them only when the episode ends (teleop "keep";
        ``discard_episode`` drops them, a crash loses them).

        ``stream`` (a name, e.g. an actor id): per-stream episodes, so that one writer holds
        several open episodes at once, one per stream. A stream's open episode stays in memory
        and is written whole (one WAL record, contiguous rows) when it ends; :meth:`stream_rows`
        counts the rows of a stream's ended episodes, persisted with them (COMMIT.json and the
        episode's WAL record), so a caller that acknowledges only up to ``stream_rows`` after a
        kill -9 has lost nothing it acknowledged and stores nothing twice. A crash loses a
        stream's open episode (never acknowledged). A partition is written either by the default
        episode or by streams at a time (the rows of an episode are contiguous).
        """
        self._check_writable()
        if partition not in self.parts:
            raise StoreError(f"store {self.path}: partition must be 'demo' or 'online', got {partition!r}")
        if stream is not None:
            self._stream_start(stream, obs, partition)
            return
        busy = sorted(k for k, v in self._streams.items() if v.partition == partition)
        if busy:
            raise StoreError(f"store {self.path}: {partition} has open stream episodes ({', '.join(busy[:4])}); "
                             f"end them before writing a default episode there")
        if self._open is not None:
            if self._buffered:
                self.discard_episode()
            elif self._open_len > 0:
                self._end_episode(self.parts[self._open], EP_INTERRUPTED | self._open_flags)
                self.commit()  # the WAL must not replay steps into a new episode
            self._open = None
        self._cur_obs = self._flat_obs(obs, "obs")
        self._open = partition
        self._open_len = 0
        self._open_flags = 0
        self._buffered = bool(buffered)
        self._buf, self._buf_rows = [], []
        self.parts[partition].open_start = self.parts[partition].end

    def _flat_obs(self, obs: Any, what: str) -> list[np.ndarray]:
        if self.obs_keys == [""]:
            return [np.array(obs, copy=True)]
        out = []
        for k in self.obs_keys:
            v = obs
            try:
                for part in k.split("."):
                    v = v[part]
            except (KeyError, TypeError, IndexError):
                raise StoreError(f"store {self.path}: {what} has no key {k!r} (Dict observation space)") from None
            out.append(np.array(v, copy=True))
        return out

    def add_step(self, *, action: Any, executed_action: Any = None, reward: float, next_obs: Any, terminated: bool,
                 truncated: bool, stream: str | None = None, **optional: Any) -> None:
        """Append one transition of the open episode; durable against kill -9 when it returns.

        ``executed_action`` defaults to ``action`` (what the robot really did after safety
        clipping or an intervention). ``optional``: is_success, intervention, log_prob,
        timestamp (default ``time.time()``), and the store's extra fields. The episode
        ends when ``terminated`` or ``truncated`` is true.

        ``stream``: append to that stream's open episode instead (see :meth:`start_episode`):
        held in memory until the episode ends, then written whole (durable when the ending
        ``add_step``/``end_episode`` returns).
        """
        if stream is not None:
            self._stream_step(stream, action, executed_action, reward, next_obs, terminated, truncated, optional)
            return
        if self._open is None:
            self._check_writable()
            raise StoreError(f"store {self.path}: add_step before start_episode")
        part = self.parts[self._open]
        nxt = self._flat_obs(next_obs, "next_obs")
        row = self._make_row(self._cur_obs, action, executed_action, reward, nxt, terminated, truncated,  # type: ignore[arg-type]
                             optional)
        if row["is_success"][0]:
            self._open_flags |= EP_SUCCESS
        rec = walmod.encode(part.pid, part.end + len(self._buf_rows) if self._buffered else part.end, row.tobytes())
        self._cur_obs = nxt
        self._open_len += 1
        if self._buffered:
            self._buf.append(rec)
            self._buf_rows.append(row)
            if terminated or truncated:
                self._write_buffered(part, EP_TERMINATED if terminated else EP_TRUNCATED)
            return
        self._ensure_wal()
        self._wal.append(rec)  # type: ignore[union-attr]
        if part.end % self.chunk_rows != self.chunk_rows - 1:  # fast path: no flush on this row
            part.pending[part.n_pend] = row[0]  # type: ignore[index]
            part.n_pend += 1
            part.end += 1
            part.last_row = row
            flushed = False
        else:
            flushed = self._append_row_array(part, row)
        if terminated or truncated:
            self._end_episode(part, (EP_TERMINATED if terminated else EP_TRUNCATED) | self._open_flags)
            self._open = None
        if flushed:
            self._commit(new_wal=True)
        else:
            self._maybe_fsync()

    def _make_row(self, cur_obs: list[np.ndarray], action: Any, executed_action: Any, reward: float,
                  nxt: list[np.ndarray], terminated: bool, truncated: bool, optional: dict[str, Any]) -> np.ndarray:
        """One structured row [1] of the store's dtype (StoreError on a bad value or unknown field)."""
        row = np.zeros(1, dtype=self.dtype)
        try:
            for name, v in zip(self.obs_fields, cur_obs):
                row[name][0] = v
            row["action"][0] = action
            row["executed_action"][0] = action if executed_action is None else executed_action
            row["reward"][0] = reward
            for name, v in zip(self.next_obs_fields, nxt):
                row[name][0] = v
            row["terminated"][0] = terminated
            row["truncated"][0] = truncated
            if "timestamp" not in optional:
                row["timestamp"][0] = time.time()
            if "log_prob" not in optional:
                row["log_prob"][0] = np.nan
            for k, v in optional.items():
                if k not in self.dtype.names or k in ("reward", "terminated", "truncated") or k.startswith(("obs", "next_obs", "action")):
                    raise StoreError(f"store {self.path}: unknown step field {k!r} (known optional: "
                                     f"{[n for n, _, _ in OPTIONAL_FIELDS] + self.meta.get('extra_fields', [])})")
                row[k][0] = v
        except (ValueError, TypeError) as e:
            raise StoreError(f"store {self.path}: bad step value: {e}") from None
        return row

    def _write_buffered(self, part: _Part, flags: int) -> None:
        self._ensure_wal()
        self._wal.append(b"".join(self._buf))  # type: ignore[union-attr]
        flushed = self._append_row_array(part, np.concatenate(self._buf_rows))
        self._end_episode(part, flags | self._open_flags)
        self._open = None
        self._buffered = False
        self._buf, self._buf_rows = [], []
        if flushed:
            self._commit(new_wal=True)
        else:
            self._maybe_fsync()

    def end_episode(self, stream: str | None = None) -> None:
        """End the open episode without a terminal/truncation flag (kept as interrupted; bootstraps).
        ``stream``: that stream's open episode (written whole now)."""
        if stream is not None:
            st = self._streams.get(stream)
            if st is not None:
                self._stream_commit(stream, EP_INTERRUPTED)
            return
        if self._open is None:
            return
        part = self.parts[self._open]
        if self._buffered:
            if self._buf_rows:
                self._write_buffered(part, EP_INTERRUPTED)
        elif self._open_len > 0:
            self._end_episode(part, EP_INTERRUPTED | self._open_flags)
            self.commit()
        self._open = None

    def discard_episode(self, stream: str | None = None) -> None:
        """Drop the open episode (teleop "discard"): its steps never reach a sampler or survive a reopen."""
        self._check_writable()
        if stream is not None:
            self._streams.pop(stream, None)
            return
        if self._open is None:
            return
        part = self.parts[self._open]
        was_buffered = self._buffered
        self._open = None
        self._buffered = False
        self._buf, self._buf_rows = [], []
        if was_buffered or part.end == part.open_start:
            return
        # Rewind: pending rows of the episode go; rows already flushed are overwritten later.
        keep = max(0, part.open_start - part.rows)
        part.n_pend = min(part.n_pend, keep)
        part.end = part.open_start
        part.rows = min(part.rows, part.open_start)
        # Commit now: the WAL holds the discarded steps and must not replay them.
        self.commit()

    # ------------------------------------------------------------------ named streams

    def _stream_start(self, stream: str, obs: Any, partition: str) -> None:
        if not isinstance(stream, str) or not stream:
            raise StoreError(f"store {self.path}: a stream name must be a non-empty string, got {stream!r}")
        if stream in self._streams:
            self.end_episode(stream=stream)
        self._streams[stream] = _Stream(partition, self._flat_obs(obs, "obs"))

    def _stream_step(self, stream: str, action: Any, executed_action: Any, reward: float, next_obs: Any,
                     terminated: bool, truncated: bool, optional: dict[str, Any]) -> None:
        self._check_writable()
        st = self._streams.get(stream)
        if st is None:
            raise StoreError(f"store {self.path}: add_step(stream={stream!r}) before start_episode(stream=...)")
        nxt = self._flat_obs(next_obs, "next_obs")
        row = self._make_row(st.cur_obs, action, executed_action, reward, nxt, terminated, truncated, optional)
        if row["is_success"][0]:
            st.flags |= EP_SUCCESS
        st.rows.append(row)
        st.n += 1
        st.cur_obs = nxt
        if terminated or truncated:
            self._stream_commit(stream, EP_TERMINATED if terminated else EP_TRUNCATED)

    def add_steps(self, rows: dict[str, np.ndarray], *, stream: str) -> None:
        """Append ``k`` transitions to ``stream``'s open episode at once (the learner's batch path).

        ``rows``: columns of ``k`` rows by store field name: ``action`` [k, *A], ``reward`` [k],
        the next-observation fields [k, *shape], ``terminated`` / ``truncated`` [k] (only the last
        row may end the episode), and optionally ``executed_action`` (default: action),
        ``is_success``, ``intervention``, ``log_prob`` (NaN), ``timestamp`` (now) and extra fields.
        Observations are chained as :meth:`add_step` does (row 0's is the episode's current
        observation, row j's is row j-1's next observation; given obs columns are ignored).

        Plain formula (what it equals, tested): for each row j, ``add_step(**row_j, stream=stream)``.
        """
        self._check_writable()
        st = self._streams.get(stream)
        if st is None:
            raise StoreError(f"store {self.path}: add_steps(stream={stream!r}) before start_episode(stream=...)")
        k = int(np.asarray(rows["reward"]).shape[0])
        if k == 0:
            return
        try:
            ends = np.asarray(rows["terminated"], bool) | np.asarray(rows["truncated"], bool)
            if ends[:-1].any():
                raise StoreError(f"store {self.path}: add_steps: only the last row may end the episode")
            block = np.zeros(k, dtype=self.dtype)
            for name, nxt, cur in zip(self.obs_fields, self.next_obs_fields, st.cur_obs):
                block[nxt] = rows[nxt]
                block[name][0] = cur
                block[name][1:] = block[nxt][:-1]
            block["action"] = rows["action"]
            block["executed_action"] = rows.get("executed_action", rows["action"])
            block["reward"] = rows["reward"]
            block["terminated"] = rows["terminated"]
            block["truncated"] = rows["truncated"]
            block["timestamp"] = rows["timestamp"] if "timestamp" in rows else time.time()
            block["log_prob"] = rows["log_prob"] if "log_prob" in rows else np.nan
            skip = set(self.obs_fields) | set(self.next_obs_fields) | {
                "action", "executed_action", "reward", "terminated", "truncated", "timestamp", "log_prob"}
            for name, v in rows.items():
                if name in skip:
                    continue
                if name not in self.dtype.names or name.startswith(("obs", "next_obs")):
                    raise StoreError(f"store {self.path}: unknown step field {name!r}")
                block[name] = v
        except (ValueError, TypeError, KeyError) as e:
            raise StoreError(f"store {self.path}: bad step values: {type(e).__name__}: {e}") from None
        if block["is_success"].any():
            st.flags |= EP_SUCCESS
        st.rows.append(block)
        st.n += k
        st.cur_obs = [np.array(block[n][-1]) for n in self.next_obs_fields]
        if ends[-1]:
            self._stream_commit(stream, EP_TERMINATED if block["terminated"][-1] else EP_TRUNCATED)

    def _stream_commit(self, stream: str, flags: int) -> None:
        """Write a stream's open episode whole: one WAL record, its rows at the partition's end."""
        st = self._streams.pop(stream)
        if not st.rows:
            return
        part = self.parts[st.partition]
        if self._open == st.partition:
            self._streams[stream] = st  # keep it: nothing was written
            raise StoreError(f"store {self.path}: cannot write stream {stream!r}'s episode into {st.partition} "
                             f"while the default episode is open there; end it first")
        rows = np.concatenate(st.rows)
        total = self._stream_rows.get(stream, 0) + len(rows)
        if rows["terminated"][-1] or rows["truncated"][-1]:  # its last step says how it ended
            flags = EP_TERMINATED if rows["terminated"][-1] else EP_TRUNCATED
        flags |= st.flags
        self._ensure_wal()
        self._wal.append(walmod.encode_stream(part.pid, part.end, {"stream": stream, "n": len(rows), "flags": flags,  # type: ignore[union-attr]
                                                                   "rows": total}, rows.tobytes()))
        if self._stream_append(part, stream, rows, flags, total):  # flushed at a chunk boundary: commit
            self._commit(new_wal=True)
        else:
            self._maybe_fsync()

    def _stream_append(self, part: _Part, stream: str, rows: np.ndarray, flags: int, total: int) -> bool:
        """The rows of one ended stream episode at ``part``'s end (writing and WAL replay) -> flushed."""
        part.open_start = part.end
        flushed = self._append_row_array(part, rows)
        self._end_episode(part, flags)
        self._stream_rows[stream] = total
        return flushed

    def replay_stream_record(self, pid: int, row: int, payload: bytes) -> int:
        """WAL replay of one stream-episode record -> rows appended (0: already committed; -1: it
        does not fit the partition's end, which one writer never produces)."""
        part = self.parts[PARTITIONS[pid]]
        header, raw = walmod.decode_stream(payload)
        if row < part.end:
            return 0
        n = int(header["n"])
        if row != part.end or len(raw) != n * self.dtype.itemsize:
            return -1
        rows = np.frombuffer(raw, dtype=self.dtype).copy()
        self._stream_append(part, str(header["stream"]), rows, int(header["flags"]), int(header["rows"]))
        return n

    def stream_rows(self, stream: str) -> int:
        """Rows of ``stream``'s ended episodes in this store (durable; its open episode not included)."""
        return self._stream_rows.get(stream, 0)

    def stream_open_rows(self, stream: str) -> int:
        """Rows of ``stream``'s open episode (in memory until it ends)."""
        st = self._streams.get(stream)
        return st.n if st is not None else 0

    def streams(self) -> dict[str, int]:
        """{stream: rows of its ended episodes} for every stream this store has written."""
        return dict(self._stream_rows)

    def open_streams(self) -> list[str]:
        """Streams with an open episode."""
        return list(self._streams)

    def _append_row_array(self, part: _Part, rows: np.ndarray) -> bool:
        """Copy rows (structured [k]) into the pending block; flush (no commit) at each zarr
        chunk boundary so that flushes are chunk-aligned. Returns whether it flushed."""
        i = 0
        flushed = False
        while i < len(rows):
            space = self.chunk_rows - (part.end % self.chunk_rows)  # rows up to the next chunk boundary
            take = min(space, len(rows) - i)
            part.pending[part.n_pend: part.n_pend + take] = rows[i: i + take]  # type: ignore[index]
            part.n_pend += take
            part.end += take
            i += take
            part.last_row = rows[i - 1: i].copy()
            if part.end % self.chunk_rows == 0:
                self._flush_part(part)
                flushed = True
        return flushed

    def _end_episode(self, part: _Part, flags: int, final: list[np.ndarray] | None = None) -> None:
        """Record the episode [open_start, end); ``final`` (one array per obs field) is the next
        observation of its last step (default: the last appended row's next_obs)."""
        start = part.open_start
        length = part.end - start
        flags |= self._replay_flags.pop(part.name, 0)
        if length <= 0:
            return
        if self.frames_once:
            if final is None:
                if part.last_row is None:  # cannot happen: every WAL restates the open episode's last row
                    raise StoreCorruptError(f"store {self.path}: {part.name} episode at row {start} ends but the "
                                            f"next observation of its last step is lost")
                final = [np.array(part.last_row[n][0]) for n in self.next_obs_fields]
            part.final_pend.append(final)
        part.append_episode(start, length, flags)
        part.open_start = part.end
        if part.name == "online":
            # FIFO eviction of whole oldest episodes; always keep the newest one.
            while part.live_steps() > self.online_capacity and part.head_ep < part.n_eps - 1:
                part.head_ep += 1
                part.head_row = int(part.episode_starts(part.head_ep, part.head_ep + 1)[0])

    # ------------------------------------------------------------------ flush / commit

    def _ensure_wal(self) -> None:
        if self._wal is None:
            self._commit(new_wal=True)

    def _maybe_fsync(self) -> None:
        if self._wal is None or self.fsync_policy == "never":
            return
        now = time.monotonic()
        if self.fsync_policy == "always" or now - self._last_fsync >= self.fsync_interval_s:
            self._wal.fsync()
            self._last_fsync = now

    def chunk_path(self, partition: str, fname: str, ci: int) -> Path:
        """File of chunk ``ci`` of array ``<partition>/<fname>`` (``_episodes`` for the index)."""
        f = self._spec[fname] if fname != "_episodes" else EPISODES_SPEC
        return chunk_path(self.path, partition, f, ci)

    def _flush_part(self, part: _Part) -> None:
        """Write pending rows into zarr at [rows, rows + n_pend) (not yet committed)."""
        if part.n_pend == 0:
            return
        a, b = part.rows, part.rows + part.n_pend
        block = part.pending[: part.n_pend]  # type: ignore[index]
        cr = self.chunk_rows
        for f in self.stored_fields:
            arr = part.arrays[f.name]
            if arr.shape[0] < b:
                arr.resize((-(-b // cr) * cr, *f.shape))
            arr[a:b] = block[f.name]
        if self.fsync_policy != "never":
            for f in self.stored_fields:
                for ci in range(a // cr, (b - 1) // cr + 1):
                    cp = self.chunk_path(part.name, f.name, ci)
                    fsync_path(cp)
                    fsync_path(cp.parent)
                fsync_path(self.path / "data.zarr" / part.name / f.name / "zarr.json")
        part.rows = b
        part.n_pend = 0

    def _flush_episodes(self, part: _Part) -> None:
        n0, n1 = part.eps_flushed, part.n_eps
        if n1 > n0:
            arr = part.episodes_arr
            if arr.shape[0] < n1:
                arr.resize((-(-n1 // EPISODE_CHUNK) * EPISODE_CHUNK, 3))
            arr[n0:n1] = part.raw_table(n0, n1)
            if self.fsync_policy != "never":
                for ci in range(n0 // EPISODE_CHUNK, (n1 - 1) // EPISODE_CHUNK + 1):
                    fsync_path(self.chunk_path(part.name, "_episodes", ci))
                fsync_path(self.path / "data.zarr" / part.name / "_episodes" / "zarr.json")
            fc = self.final_chunk
            for j, f in enumerate(self.final_fields):
                farr = part.final_arrays[f.name]
                if farr.shape[0] < n1:
                    farr.resize((-(-n1 // fc) * fc, *f.shape))
                farr[n0:n1] = np.stack([fin[j] for fin in part.final_pend[: n1 - n0]])
                if self.fsync_policy != "never":
                    for ci in range(n0 // fc, (n1 - 1) // fc + 1):
                        fsync_path(self.chunk_path(part.name, f.name, ci))
                    fsync_path(self.path / "data.zarr" / part.name / f.name / "zarr.json")
            part.final_pend = []
            part.eps_flushed = n1
        elif n1 < n0:
            part.eps_flushed = n1

    def commit(self) -> None:
        """Flush every pending row into zarr and atomically publish a new commit (generation + 1)."""
        self._check_writable()
        self._commit(new_wal=self._wal is not None)

    def _commit(self, new_wal: bool) -> None:
        for part in self.parts.values():
            self._flush_part(part)
            self._flush_episodes(part)
        # Frames once: the next observation of the open episode's last flushed step lives only in
        # the WAL; restate that row at the head of the new WAL (recovery reads it back).
        carry = None
        if self.frames_once and self._open is not None and not self._buffered:
            op = self.parts[self._open]
            if op.end > op.open_start and op.last_row is not None:
                carry = walmod.encode(op.pid, op.end - 1, op.last_row.tobytes())
                new_wal = True
        gen = self.generation + 1
        old = self._wal_name
        new_name = f"wal-{gen:09d}.log" if new_wal else None
        new_writer = None
        if new_name:
            new_writer = walmod.WalWriter(self.path / new_name, create=True)
            if carry is not None:
                new_writer.append(carry)
            if self.fsync_policy != "never":
                os.fsync(new_writer.fd)
        doc = {
            "format_version": self.format_version,
            "generation": gen,
            "time": time.time(),
            "wal": new_name,
            "merged": self.merged,
            "streams": dict(self._stream_rows),
            "partitions": {
                name: {"rows": p.rows, "episodes": p.n_eps, "head_row": p.head_row, "head_episode": p.head_ep,
                       "freed_chunks": p.freed_chunks}
                for name, p in self.parts.items()
            },
        }
        atomic_write_text(self.path / "COMMIT.json", json.dumps(doc))
        self.generation = gen
        if self._wal is not None:
            self._wal.close()
        self._wal = new_writer
        self._wal_name = new_name
        self._last_fsync = time.monotonic()
        if old and old != new_name:
            try:
                (self.path / old).unlink()
            except FileNotFoundError:
                pass
        self._free_evicted_chunks()

    def _free_evicted_chunks(self) -> None:
        """Delete online chunks wholly before the committed head (after the commit that evicted them)."""
        part = self.parts["online"]
        upto = part.head_row // self.chunk_rows
        if upto <= part.freed_chunks:
            return
        for f in self.stored_fields:
            base = self.path / "data.zarr" / part.name / f.name / "c"
            for ci in range(part.freed_chunks, upto):
                t = base / str(ci)
                if t.is_dir():
                    shutil.rmtree(t, ignore_errors=True)
                elif t.exists():
                    t.unlink()
        part.freed_chunks = upto  # recorded by the next commit; re-deleting is harmless

    def close(self) -> None:
        """Commit everything, remove the WAL and release the lock. An open episode is kept
        as interrupted (a buffered one is discarded)."""
        if self._closed:
            return
        if self.mode == "a":
            try:
                if self._open is not None:
                    if self._buffered:
                        self.discard_episode()
                    else:
                        self.end_episode()
                for name in list(self._streams):
                    self.end_episode(stream=name)
                self._commit(new_wal=False)
                # Trim array shapes to the committed rows, for plain zarr readers.
                for part in self.parts.values():
                    for f in self.stored_fields:
                        arr = part.arrays[f.name]
                        if arr.shape[0] != part.rows:
                            arr.resize((part.rows, *f.shape))
                    for f in self.final_fields:
                        arr = part.final_arrays[f.name]
                        if arr.shape[0] != part.n_eps:
                            arr.resize((part.n_eps, *f.shape))
                    if part.episodes_arr.shape[0] != part.n_eps:
                        part.episodes_arr.resize((part.n_eps, 3))
            finally:
                self._release_lock()
        self._closed = True

    def __enter__(self) -> "ReplayStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: release the lock fd
        try:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
        except Exception:
            pass

    # ------------------------------------------------------------------ reading

    def _part(self, partition: str) -> _Part:
        if partition not in self.parts:
            raise StoreError(f"store {self.path}: partition must be 'demo' or 'online', got {partition!r}")
        return self.parts[partition]

    def num_steps(self, partition: Partition) -> int:
        """Steps in ended, live episodes of ``partition``."""
        return self._part(partition).live_steps()

    def num_episodes(self, partition: Partition) -> int:
        p = self._part(partition)
        return p.n_eps - p.head_ep

    def total_episodes(self, partition: Partition) -> int:
        """Episodes ever ended in ``partition`` (incl. evicted ones); collect resumes seeds from it."""
        return self._part(partition).n_eps

    def end_row(self, partition: Partition) -> int:
        """Next logical row of ``partition`` (rows ever appended, incl. the open episode's; eviction never renumbers)."""
        return self._part(partition).end

    def head_row(self, partition: Partition) -> int:
        """First live (not evicted) logical row of ``partition``."""
        return self._part(partition).head_row

    def episodes(self, partition: Partition) -> np.ndarray:
        """Live episodes: int64 [E, 3] (start row, length, flags), a copy."""
        return self._part(partition).episodes().copy()

    def episode_counts(self, partition: Partition) -> tuple[int, int]:
        """(head_episode, ended episodes): cheap change detection for samplers."""
        return self._part(partition).episode_counts()

    def index(self, partition: Partition) -> PartitionIndex:
        """The live episode index of ``partition`` (see roborl/store/index.py); read it, never write it."""
        return self._part(partition)

    def committed_rows(self, partition: Partition) -> int:
        """Rows of ``partition`` durably in zarr and named by COMMIT.json (logical rows, from 0)."""
        return self._part(partition).rows

    def array_shape(self, partition: Partition, fname: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of array ``<partition>/<fname>`` as zarr opened it (the row count is
        a multiple of chunk_rows while writing; only COMMIT.json says which rows hold data)."""
        p = self._part(partition)
        arr = p.episodes_arr if fname == "_episodes" else p.final_arrays[fname] if fname.startswith(FINAL_PREFIX) \
            else p.arrays[fname]
        return tuple(arr.shape), np.dtype(arr.dtype)

    @property
    def wal_name(self) -> str | None:
        """The WAL file named by the last commit (None when there is none)."""
        return self._wal_name

    def read_rows(self, partition: Partition, start: int, stop: int,
                  fields: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Columns of logical rows [start, stop) -> {field: [stop-start, *shape]} (zarr + pending)."""
        p = self._part(partition)
        names = list(fields) if fields is not None else self.field_names
        if start < p.head_row or stop > p.end or start > stop:
            raise StoreError(f"store {self.path}: rows [{start}, {stop}) of {partition} are not stored "
                             f"(live [{p.head_row}, {p.end}))")
        out = {}
        virt = [n for n in names if n in self.virtual_fields]
        if virt:
            out.update(self._next_obs_rows(p, start, stop, virt))
        z_stop = min(stop, p.rows)
        for n in names:
            if n in self.virtual_fields:
                continue
            if n not in self._spec or n.startswith(FINAL_PREFIX):
                raise StoreError(f"store {self.path}: no field {n!r} (fields: {', '.join(self.field_names)})")
            parts = []
            if start < z_stop:
                parts.append(self._read_checked(p, n, start, z_stop, self.chunk_rows))
            if stop > p.rows:
                a = max(start, p.rows) - p.rows
                parts.append(np.array(p.pending[n][a: stop - p.rows]))  # type: ignore[index]
            out[n] = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
                np.zeros((0, *self.dtype[n].shape), self.dtype[n].base)
        return {n: out[n] for n in names} if virt else out

    def _next_obs_rows(self, p: _Part, start: int, stop: int, names: list[str]) -> dict[str, np.ndarray]:
        """Format 2: ``next_obs`` fields of rows [start, stop), rebuilt from the stored obs::

            next_obs[t] = obs[t + 1]            if t + 1 < end of t's episode
                        = final[episode of t]   if t is the last step of an ended episode
                        = the writer's last row  if t is the last step so far of the open episode
        """
        obs_names = [n[len("next_"):] for n in names]
        hi = min(stop + 1, p.end)
        nxt = self.read_rows(p.name, start + 1, hi, obs_names) if hi > start + 1 else \
            {n: np.zeros((0, *self._spec[n].shape), self._spec[n].dtype) for n in obs_names}  # type: ignore[arg-type]
        out = {}
        for n, o in zip(names, obs_names):
            a = np.empty((stop - start, *self._spec[n].shape), self._spec[n].dtype)
            a[: len(nxt[o])] = nxt[o]
            out[n] = a
        if stop == start:
            return out
        ends = p.episode_ends()
        ep = np.flatnonzero((ends > start) & (ends <= stop))
        if len(ep):
            e0 = p.head_ep + int(ep[0])
            fin = self.read_finals(p.name, e0, p.head_ep + int(ep[-1]) + 1)  # type: ignore[arg-type]
            rows = ends[ep] - 1 - start
            for n, o in zip(names, obs_names):
                out[n][rows] = fin[o][ep + p.head_ep - e0]
        open_end = not len(ends) or ends[-1] < stop
        if stop == p.end and open_end:
            if self.mode != "a" or p.last_row is None:
                raise StoreError(f"store {self.path}: next_obs of {p.name} row {stop - 1} is not stored yet "
                                 f"(its episode is still open); read up to row {int(ends[-1]) if len(ends) else p.head_row}")
            for n in names:
                out[n][-1] = p.last_row[n][0]
        return out

    def read_finals(self, partition: Partition, first: int, stop: int) -> dict[str, np.ndarray]:
        """The next observation of the last step of live ended episodes [first, stop) (absolute
        numbers) -> {obs field: [E, *shape]} (format 2: the ``_final_*`` arrays; format 1: the
        last rows' next_obs)."""
        p = self._part(partition)
        if not p.head_ep <= first <= stop <= p.n_eps:
            raise StoreError(f"store {self.path}: episodes [{first}, {stop}) of {partition} are not live "
                             f"([{p.head_ep}, {p.n_eps}))")
        out: dict[str, np.ndarray] = {}
        if not self.frames_once:
            last = p.episode_ends(first, stop) - 1
            cols: dict[str, list[np.ndarray]] = {n: [] for n in self.obs_fields}
            i = 0
            step = max(self.chunk_rows, 65536)
            while i < len(last):  # read in row windows so a long store is not held twice in memory
                j = int(np.searchsorted(last, last[i] + step))
                j = max(j, i + 1)
                rows = self.read_rows(partition, int(last[i]), int(last[j - 1]) + 1, self.next_obs_fields)
                for o, n in zip(self.obs_fields, self.next_obs_fields):
                    cols[o].append(rows[n][last[i:j] - last[i]])
                i = j
            for o in self.obs_fields:
                spec = self._spec[o]
                out[o] = np.concatenate(cols[o]) if cols[o] else np.zeros((0, *spec.shape), spec.dtype)
            return out
        zs = min(stop, p.eps_flushed)
        for j, (o, f) in enumerate(zip(self.obs_fields, self.final_fields)):
            parts = []
            if first < zs:
                parts.append(self._read_checked(p, f.name, first, zs, self.final_chunk))
            if stop > zs:
                parts.append(np.stack([fin[j] for fin in p.final_pend[max(first, zs) - p.eps_flushed: stop - p.eps_flushed]]))
            out[o] = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else \
                np.zeros((0, *f.shape), f.dtype)
        return out

    def _chunk_error(self, p: _Part, fname: str, ci: int, cr: int, problem: str) -> StoreCorruptError:
        what = "episodes" if fname == "_episodes" else "rows"
        return StoreCorruptError(f"store {self.path}: data.zarr/{p.name}/{fname} chunk {ci} {problem} "
                                 f"({what} [{ci * cr}, {(ci + 1) * cr}))")

    def _read_checked(self, p: _Part, fname: str, a: int, b: int, cr: int) -> np.ndarray:
        """Rows [a, b) of one committed array; StoreCorruptError naming the chunk when one is
        missing (zarr would return fill values) or fails to decode (zstd checksum)."""
        arr = p.episodes_arr if fname == "_episodes" else p.final_arrays[fname] \
            if fname.startswith(FINAL_PREFIX) else p.arrays[fname]
        for ci in range(a // cr, (b - 1) // cr + 1):
            if not os.path.exists(self.chunk_path(p.name, fname, ci)):
                if fname in p.arrays and ci < self._freed_by_writer(p):
                    raise StoreError(f"store {self.path}: {p.name} rows [{a}, {b}) were evicted by the "
                                     f"writer after this reader opened the store; reopen it")
                raise self._chunk_error(p, fname, ci, cr, "is missing (zarr would read it as zeros)")
        try:
            return np.asarray(arr[a:b])
        except Exception:  # zstd: checksum or frame errors; find the chunk to name it
            for ci in range(a // cr, (b - 1) // cr + 1):
                try:
                    arr[max(a, ci * cr): min(b, (ci + 1) * cr)]
                except Exception as e:
                    raise self._chunk_error(p, fname, ci, cr, f"is corrupt ({type(e).__name__}: "
                                            f"{_first_line(e)})") from None
            raise

    def _freed_by_writer(self, p: _Part) -> int:
        """Chunks [0, n) of ``p`` a concurrent writer has freed by now (readers only: COMMIT.json
        is re-read; a writer knows its own evictions)."""
        if self.mode != "r":
            return p.freed_chunks
        try:
            return int(read_commit(self.path)["partitions"][p.name].get("freed_chunks", 0))
        except (StoreError, KeyError, TypeError, ValueError, AttributeError):
            return 0

    def check_chunks(self, partitions: Iterable[str] = PARTITIONS) -> list[str]:
        """Quick integrity check without decoding: every chunk of every array under the live
        committed rows (and of the episode index) exists and is a whole zstd frame of the
        right size (see integrity.py). Returns problems, at most one per array."""
        out = []
        for name in partitions:
            p = self._part(name)
            cr = self.chunk_rows
            spans = [(f, p.head_row // cr, (p.rows - 1) // cr + 1 if p.rows > p.head_row else 0, cr)
                     for f in self.stored_fields]
            # eps_flushed, not n_eps: a writer's ended episodes reach zarr at its next commit.
            ne = p.eps_flushed
            spans.append((EPISODES_SPEC, 0, (ne - 1) // EPISODE_CHUNK + 1 if ne else 0, EPISODE_CHUNK))
            fc = self.final_chunk
            spans += [(f, 0, (ne - 1) // fc + 1 if ne else 0, fc) for f in self.final_fields]
            for f, c0, c1, rows in spans:
                nbytes = rows * int(np.prod(f.shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize
                for ci in range(c0, c1):
                    why = chunk_problem(self.chunk_path(name, f.name, ci), nbytes)
                    if why and f in self.stored_fields and ci < self._freed_by_writer(p):
                        continue  # evicted since this reader opened: not corruption
                    if why:
                        out.append(str(self._chunk_error(p, f.name, ci, rows, why)).split(": ", 1)[1])
                        break
        return out

    def read_episode(self, partition: Partition, i: int) -> dict[str, np.ndarray]:
        """All fields of live episode ``i`` (0 = oldest live)."""
        eps = self.episodes(partition)
        if not 0 <= i < len(eps):
            raise StoreError(f"store {self.path}: {partition} has {len(eps)} episodes, no index {i}")
        s, n, _ = eps[i]
        return self.read_rows(partition, int(s), int(s + n))

    def size_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.path):
            for fn in files:
                try:
                    total += os.path.getsize(os.path.join(root, fn))
                except OSError:
                    pass
        return total

    # ------------------------------------------------------------------ merge

    def merge_from(self, src_path: str | Path, partition: Partition = "demo", *,
                   allow_env_mismatch: bool = False, fill: dict[str, Any] | None = None) -> int:
        """Copy every live episode of another store (both its partitions) into ``partition``.

        Schemas must match (spaces and fields; else StoreError naming the field), and so must
        the env ids unless ``allow_env_mismatch`` (same spaces do not make the same task). A
        source is merged once: merging the same store again returns 0. Returns episodes
        copied. Every row read is checked (StoreCorruptError naming the chunk; nothing is
        committed then). ``fill``: extra fields of this store that the source may lack, with the
        value its rows get (demos recorded before a run added the reward classifier's fields).
        """
        self._check_writable()
        self._part(partition)
        if self._open is not None or self._streams:
            raise StoreError(f"store {self.path}: end or discard the open episode before merging")
        src_p = Path(src_path)
        if src_p.resolve() == self.path.resolve():
            raise StoreError(f"store {self.path}: cannot merge a store into itself")
        src = ReplayStore.open(src_p, mode="r", observation_space=self.observation_space,
                               action_space=self.action_space)
        if src.env_id != self.env_id and not allow_env_mismatch and src.meta["uuid"] not in self.merged:
            src.close()
            raise StoreError(f"store {src_p}: env_id is {src.env_id!r} but {self.path} holds {self.env_id!r}; "
                             f"merge anyway with --allow-env-mismatch (store.allow_env_mismatch=true)")
        return mergemod.merge_into(self, src, partition, fill)

    # ------------------------------------------------------------------ summary

    def info(self) -> dict[str, Any]:
        """Summary for `roborl store info`; StoreCorruptError when a chunk check fails (check_chunks)."""
        bad = self.check_chunks()
        if bad:
            more = f" (and {len(bad) - 1} more problems; see roborl store verify)" if len(bad) > 1 else ""
            raise StoreCorruptError(f"store {self.path}: {bad[0]}{more}")
        scan = walmod.scan(self.path / self._wal_name) if self._wal_name else None
        if scan is not None and scan.corrupt_middle:
            raise WalCorruptError(f"store {self.path}: {self._wal_name} has a corrupt record at byte "
                                  f"{scan.valid_bytes} followed by {len(scan.after)} valid records; "
                                  f"run `roborl store repair {self.path}`")
        return {
            "path": str(self.path),
            "env_id": self.env_id,
            "format_version": self.meta["format_version"],
            "created": self.meta.get("created"),
            "generation": self.generation,
            "chunk_rows": self.chunk_rows,
            "online_capacity": self.online_capacity,
            "demo": {"episodes": self.num_episodes("demo"), "steps": self.num_steps("demo"),
                     "successes": int(np.sum(self.episodes("demo")[:, 2] & EP_SUCCESS > 0))},
            "online": {"episodes": self.num_episodes("online"), "steps": self.num_steps("online"),
                       "successes": int(np.sum(self.episodes("online")[:, 2] & EP_SUCCESS > 0)),
                       "evicted_episodes": self.parts["online"].head_ep},
            "fields": {f.name: {"dtype": f.dtype, "shape": list(f.shape)} for f in self.fields},
            "frames_once": self.frames_once,
            "size_bytes": self.size_bytes(),
            "uncommitted_wal_steps": len(scan.records) if scan is not None else 0,
        }


def _first_line(e: BaseException) -> str:
    """An exception's message as one short line."""
    return (str(e).strip().splitlines() or [""])[0][:200]
