"""`roborl store repair`: make a store with a corrupt WAL writable again, saying what is lost.

A WAL whose bad record is followed by valid ones (see wal.py) makes writable opens refuse.
:func:`repair_store` keeps the records before the bad one (replayed like after a crash),
drops the bad record and everything after it (rows must stay contiguous, so later steps of
that episode cannot follow a hole), and leaves the dropped bytes in the side file
``wal-<gen>.log.after-corruption`` for inspection.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from roborl.store import wal as walmod
from roborl.store.index import PARTITIONS
from roborl.store.layout import acquire_lock, read_commit, read_meta, release_lock
from roborl.store.recovery import keep_wal_tail
from roborl.store.schema import StoreError
from roborl.store.store import ReplayStore


def _rows(records: list[tuple[int, int, bytes]]) -> dict[str, list[int]]:
    """{partition: [first row, last row, count]} of WAL records."""
    out: dict[str, list[int]] = {}
    for pid, row, payload in records:
        n = 1
        if pid & walmod.STREAM_FLAG:  # one whole stream episode: its rows from `row` on
            pid &= ~walmod.STREAM_FLAG
            try:
                n = int(walmod.decode_stream(payload)[0]["n"])
            except (ValueError, KeyError, TypeError):
                n = 1
        name = PARTITIONS[pid] if 0 <= pid < len(PARTITIONS) else f"partition{pid}"
        r = out.setdefault(name, [row, row, 0])
        r[0], r[1], r[2] = min(r[0], row), max(r[1], row + n - 1), r[2] + n
    return out


def repair_store(path: str | Path) -> dict[str, Any]:
    """Repair ``path``'s WAL if it has a corrupt record before valid ones. Returns
    ``{repaired, wal, kept_records, kept_rows, dropped_bytes, dropped_records, dropped_rows,
    side_file, recovered}`` (``repaired`` False and nothing changed when the WAL is sound)."""
    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"store not found: {p}")
    read_meta(p)
    wal = read_commit(p).get("wal")
    out: dict[str, Any] = {"path": str(p), "repaired": False, "wal": wal}
    fd = acquire_lock(p)
    try:
        scan = walmod.scan(p / wal) if isinstance(wal, str) else None
        if scan is not None and scan.corrupt_middle:
            side = keep_wal_tail(p, wal, scan)  # type: ignore[arg-type]
            out.update(repaired=True, kept_records=len(scan.records), kept_rows=_rows(scan.records),
                       dropped_bytes=scan.file_bytes - scan.valid_bytes, corrupt_at_byte=scan.valid_bytes,
                       dropped_records=len(scan.after), dropped_rows=_rows(scan.after), side_file=side.name)
            walmod.truncate(p / wal, scan.valid_bytes)  # type: ignore[operator]
    finally:
        release_lock(fd)
    # A normal writable open now replays the kept records and commits them.
    with ReplayStore.open(p, mode="a") as st:
        out["recovered"] = dict(st.recovered)
    return out
