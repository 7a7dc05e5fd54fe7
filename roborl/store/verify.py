"""`roborl store verify`: check every invariant of a store without writing to it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from roborl.store import wal as walmod
from roborl.store.index import EP_INTERRUPTED, EP_TERMINATED, EP_TRUNCATED, PARTITIONS
from roborl.store.layout import wal_side_file
from roborl.store.schema import StoreError
from roborl.store.store import ReplayStore


def verify_store(path: str | Path, *, read_data: bool = True) -> dict[str, Any]:
    """Return ``{"ok", "demo": {episodes, steps}, "online": {...}, "problems": [...], "warnings": [...]}``.

    Problems (``ok`` false): unreadable metadata or commit, inconsistent episode index,
    arrays shorter than the committed rows or with another dtype, missing chunks under
    committed rows (they would read back as fill-value zeros), chunk files that are not a
    whole zstd frame of the right size (``read_data=False`` stops here), chunks failing
    their zstd checksum, terminal flags inside an episode, episode flags disagreeing with
    the last step, non-finite rewards, a WAL with a corrupt record before valid ones.
    Warnings: leftover temp files, stale or uncommitted WAL records (a writable open cleans
    and replays those). Retries when a concurrent writer commits meanwhile. Never raises:
    anything unexpected is a problem too, so the caller can always print the result.
    """
    p = Path(path)
    for _ in range(3):
        gen0 = _generation(p)
        try:
            res = _verify_once(p, read_data)
        except Exception as e:  # never a traceback instead of a report
            res = {"ok": False, "path": str(p), "demo": {"episodes": 0, "steps": 0},
                   "online": {"episodes": 0, "steps": 0}, "warnings": [],
                   "problems": [f"unexpected {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"]}
        if res["ok"] or _generation(p) == gen0:
            return res
    return res


def _generation(p: Path) -> int | None:
    try:
        return int(json.loads((p / "COMMIT.json").read_text())["generation"])
    except Exception:
        return None


def _verify_once(p: Path, read_data: bool) -> dict[str, Any]:
    problems: list[str] = []
    warnings: list[str] = []
    out: dict[str, Any] = {"ok": False, "path": str(p), "demo": {"episodes": 0, "steps": 0},
                           "online": {"episodes": 0, "steps": 0}, "problems": problems, "warnings": warnings}
    try:
        st = ReplayStore.open(p, mode="r")
    except StoreError as e:  # incl. StoreCorruptError: a damaged index, commit or zarr.json
        problems.append(str(e))
        return out
    try:
        out["generation"] = st.generation
        for root, dirs, files in os.walk(p):
            for fn in files + dirs:
                if fn.endswith(".partial") or fn.endswith(".tmp"):
                    warnings.append(f"leftover temp file {os.path.relpath(os.path.join(root, fn), p)} "
                                    f"(removed on the next writable open)")
        for f in p.glob("wal-*.log"):
            if f.name != st.wal_name:
                warnings.append(f"stale WAL {f.name} not named by COMMIT.json (removed on the next writable open)")
        if st.wal_name:
            scan = walmod.scan(p / st.wal_name)
            recs, valid, size = scan.records, scan.valid_bytes, scan.file_bytes
            if scan.corrupt_middle:
                problems.append(f"{st.wal_name} has a corrupt record at byte {valid} followed by {len(scan.after)} "
                                f"valid records; writable opens refuse (bytes kept in {wal_side_file(st.wal_name)}) "
                                f"until `roborl store repair {p}`")
            elif size > valid:
                warnings.append(f"torn tail of {size - valid} bytes in {st.wal_name} (cut on the next writable open)")
            if recs:
                warnings.append(f"{len(recs)} steps in {st.wal_name} not yet flushed (replayed on the next writable open)")
        for name in PARTITIONS:
            _check_partition(st, name, problems, read_data)
            out[name] = {"episodes": st.num_episodes(name), "steps": st.num_steps(name)}  # type: ignore[arg-type]
    finally:
        st.close()
    out["ok"] = not problems
    return out


def _check_partition(st: ReplayStore, name: str, problems: list[str], read_data: bool) -> None:
    part = st.index(name)  # type: ignore[arg-type]
    where = f"{name}:"
    if not (0 <= part.head_ep <= part.n_eps):
        problems.append(f"{where} head_episode {part.head_ep} outside [0, {part.n_eps}]")
        return
    eps = part.episodes()
    table = part.table_problems()
    problems.extend(f"{where} {msg}" for msg in table)
    if any("past the committed rows" in msg for msg in table):
        return
    cr = st.chunk_rows
    for f in st.stored_fields + st.final_fields:
        need = part.n_eps if f in st.final_fields else part.rows
        shape, dtype = st.array_shape(name, f.name)
        if shape[0] < need or tuple(shape[1:]) != f.shape or dtype != np.dtype(f.dtype):
            problems.append(f"{where} array {f.name} has shape {shape} {dtype}, expected "
                            f">= ({need}, {', '.join(map(str, f.shape))}) {f.dtype}")
    problems.extend(f"{where} {msg}" for msg in st.check_chunks([name]))
    if problems or not read_data or not len(eps):
        return
    # Decode every live row (zstd checksums catch corrupt chunks) and check step flags.
    s0, s1 = int(eps[0, 0]), int(eps[-1, 0] + eps[-1, 1])
    step = max(cr, 65536)
    term = np.zeros(s1 - s0, bool)
    trunc = np.zeros(s1 - s0, bool)
    for a in range(s0, s1, step):
        b = min(s1, a + step)
        try:
            cols = st.read_rows(name, a, b)  # type: ignore[arg-type]
        except StoreError as e:  # a corrupt chunk (zstd checksum or decode error), named
            problems.append(f"{where} rows [{a}, {b}) unreadable: {str(e).split(': ', 1)[-1]}")
            return
        except Exception as e:
            problems.append(f"{where} rows [{a}, {b}) unreadable: {type(e).__name__}: {str(e)[:120]}")
            return
        term[a - s0: b - s0] = cols["terminated"]
        trunc[a - s0: b - s0] = cols["truncated"]
        if not np.all(np.isfinite(cols["reward"])):
            problems.append(f"{where} non-finite reward in rows [{a}, {b})")
    last = eps[:, 0] + eps[:, 1] - 1 - s0
    inner = np.ones(s1 - s0, bool)
    inner[last] = False
    if np.any((term | trunc) & inner):
        r = int(np.flatnonzero((term | trunc) & inner)[0]) + s0
        problems.append(f"{where} row {r} is terminated/truncated but not the last step of its episode")
    flags = eps[:, 2]
    bad = ((flags & EP_TERMINATED) > 0) != term[last]
    bad |= ((flags & EP_TRUNCATED) > 0) != (trunc[last] & ~term[last])
    bad |= ((flags & EP_INTERRUPTED) > 0) != ~(term[last] | trunc[last])
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        problems.append(f"{where} episode {part.head_ep + i} flags {int(flags[i])} disagree with its last step")
