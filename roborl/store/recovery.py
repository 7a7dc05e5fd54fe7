"""Recovery on a writable open: remove crash leftovers, replay the WAL, close the open episode.

After ``kill -9`` (or power loss) a store can hold: zarr ``*.partial`` and our ``*.tmp``
files, a WAL not named by COMMIT.json (a crash between creating the next WAL and renaming
the commit), and WAL records not yet flushed into zarr. :func:`recover` undoes the first two
and replays the third; an episode open at the crash is closed as *interrupted* (it
bootstraps at its end, like a truncation). Read-only opens never call this.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from roborl.fsutil import fsync_path

from roborl.store import wal as walmod
from roborl.store.index import EP_INTERRUPTED, EP_SUCCESS, EP_TERMINATED, EP_TRUNCATED, PARTITIONS
from roborl.store.layout import EPISODE_CHUNK, wal_side_file
from roborl.store.schema import WalCorruptError


def cleanup_temp_files(root: Path, commit: dict[str, Any], chunk_rows: int, field_names: list[str],
                       episode_arrays: dict[str, int] | None = None) -> list[str]:
    """Remove zarr ``*.partial`` files and our ``*.tmp`` files left by a crash; returns their paths.

    Only places a writer can have been writing are scanned: the store root, array
    metadata, and chunks from the last committed chunk on (earlier chunks are never
    rewritten), so a reopen stays fast however many chunks a store has. ``episode_arrays``:
    per-episode arrays (final observations) -> their chunk length in episodes.
    """
    per_ep = dict(episode_arrays or {}, _episodes=EPISODE_CHUNK)
    removed: list[str] = []

    def sweep(d: Path, recursive: bool) -> None:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.endswith((".partial", ".tmp")):
                shutil.rmtree(e.path, ignore_errors=True) if e.is_dir() else os.unlink(e.path)
                removed.append(os.path.relpath(e.path, root))
            elif recursive and e.is_dir():
                sweep(Path(e.path), True)

    sweep(root, False)
    data = root / "data.zarr"
    sweep(data, False)
    for name in PARTITIONS:
        sweep(data / name, False)
        first = int(commit["partitions"][name]["rows"]) // chunk_rows
        n_eps = int(commit["partitions"][name]["episodes"])
        for fname in field_names + list(per_ep):
            fdir = data / name / fname
            sweep(fdir, False)
            lo = n_eps // per_ep[fname] if fname in per_ep else first
            try:
                entries = list(os.scandir(fdir / "c"))
            except FileNotFoundError:
                continue
            for e in entries:
                head = e.name.split(".", 1)[0]
                if e.name.endswith(".partial"):
                    os.unlink(e.path)
                    removed.append(os.path.relpath(e.path, root))
                elif e.is_dir() and (not head.isdigit() or int(head) >= lo):
                    sweep(Path(e.path), True)
    return removed


def remove_stale_wals(root: Path, keep: str | None) -> list[str]:
    """Delete ``wal-*.log`` files other than ``keep`` (the one COMMIT.json names)."""
    removed = []
    for f in root.glob("wal-*.log"):
        if f.name != keep:
            f.unlink()
            removed.append(f.name)
    return removed


def keep_wal_tail(root: Path, wal_name: str, scan: walmod.WalScan) -> Path:
    """Copy the WAL's bytes from its first bad record on into a side file (once) -> its path."""
    side = root / wal_side_file(wal_name)
    if not side.exists():
        tmp = side.with_name(side.name + ".tmp")  # a crash leaves a *.tmp, swept on the next open
        with open(tmp, "wb") as f:
            f.write((root / wal_name).read_bytes()[scan.valid_bytes:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, side)
        fsync_path(root)
    return side


def recover(store: Any, removed: list[str]) -> dict[str, Any]:
    """Replay the committed WAL into ``store`` (a ReplayStore opened writable, index loaded;
    typed Any because store.py imports this module) and close open
    episodes as interrupted. Returns ``{replayed_steps, torn_bytes, interrupted_episodes,
    removed_files}``; the caller commits."""
    removed = removed + remove_stale_wals(store.path, store.wal_name)
    replayed, torn, interrupted = 0, 0, []
    if store.wal_name:
        scan = walmod.scan(store.path / store.wal_name)
        if scan.corrupt_middle:
            side = keep_wal_tail(store.path, store.wal_name, scan)
            raise WalCorruptError(
                f"store {store.path}: {store.wal_name} has a corrupt record at byte {scan.valid_bytes} followed by "
                f"{len(scan.after)} valid records (bytes from there on kept in {side.name}); refusing to open "
                f"writable: run `roborl store repair {store.path}` to keep the {len(scan.records)} records before "
                f"it and drop the rest")
        records, valid, size = scan.records, scan.valid_bytes, scan.file_bytes
        torn = size - valid
        for pid, row, payload in records:
            if pid & walmod.STREAM_FLAG:  # one whole episode of a named stream
                got = store.replay_stream_record(pid & ~walmod.STREAM_FLAG, row, payload)
                if got < 0:
                    torn += 1  # cannot happen with one writer; stop rather than guess
                    break
                replayed += got
                continue
            part = store.parts[PARTITIONS[pid]]
            if row < part.end:
                # Already flushed into zarr before the crash. Frames once: the restated last row
                # of the open episode (see ReplayStore._commit) carries its next observation.
                if row == part.end - 1 and len(payload) == store.dtype.itemsize:
                    part.last_row = np.frombuffer(payload, dtype=store.dtype).copy()
                continue
            if row != part.end or len(payload) != store.dtype.itemsize:
                torn += 1  # cannot happen with one writer; stop rather than guess
                break
            rec = np.frombuffer(payload, dtype=store.dtype)
            store._append_row_array(part, rec)
            replayed += 1
            r = rec[0]
            if bool(r["is_success"]):
                store._replay_flags[part.name] = store._replay_flags.get(part.name, 0) | EP_SUCCESS
            if r["terminated"] or r["truncated"]:
                store._end_episode(part, EP_TERMINATED if r["terminated"] else EP_TRUNCATED)
    for part in store.parts.values():
        if part.end > part.open_start:
            interrupted.append(part.name)
            store._end_episode(part, EP_INTERRUPTED)
    return {"replayed_steps": replayed, "torn_bytes": torn, "interrupted_episodes": interrupted,
            "removed_files": removed}
