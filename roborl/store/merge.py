"""Copy every live episode of another store into one partition of a writable store (demos).

Rows go straight into zarr in batches of whole episodes (a few chunks at a time) and are
published by one commit at the end, so a crash mid-merge leaves the destination as it was.
The source's uuid is recorded in the commit: a source is merged once.
"""
from __future__ import annotations

from typing import Any

from roborl.fsutil import fsync_path
from roborl.store.index import PARTITIONS
from roborl.store.schema import StoreError


# ``dst`` / ``src`` below are ReplayStores, typed Any because store.py imports this module.

def check_same_fields(dst: Any, src: Any, fill: dict[str, Any] | None = None) -> None:
    """StoreError naming the first field whose name, dtype or shape differs (fields of ``dst`` named in
    ``fill`` may be missing from ``src``)."""
    fill = fill or {}
    if [f.to_json() for f in src.fields] != [f.to_json() for f in dst.fields if f.name not in fill or
                                             f.name in {g.name for g in src.fields}]:
        mine = {f.name: f for f in dst.fields}
        theirs = {f.name: f for f in src.fields}
        diff = sorted(set(mine) ^ set(theirs)) or [n for n in mine if mine[n] != theirs.get(n)]
        raise StoreError(f"store {src.path}: schema mismatch with {dst.path}: field {diff[0]!r} differs")


def merge_into(dst: Any, src: Any, partition: str, fill: dict[str, Any] | None = None) -> int:
    """Copy ``src`` (open read-only) into ``partition`` of ``dst`` (writable, no open episode);
    closes ``src``. ``fill``: a value for each extra field of ``dst`` that ``src`` lacks. See
    :meth:`ReplayStore.merge_from`."""
    part = dst._part(partition)
    # On any failure (a corrupt source chunk found mid-way) roll the index back, so that a
    # later commit (close) never publishes a half-merged source; rows written to zarr past
    # the committed end are overwritten later.
    gen0 = -1
    saved = (part.rows, part.end, part.n_eps, part.head_ep, part.head_row, part.open_start, part.eps_flushed,
             list(dst.merged), dict(dst._replay_flags), list(part.final_pend))
    try:
        check_same_fields(dst, src, fill)
        if src.meta["uuid"] in dst.merged:
            return 0
        dst.commit()  # nothing pending: merged rows go straight to zarr, committed once at the end
        gen0 = dst.generation
        cr = dst.chunk_rows
        copied = 0
        for sp in PARTITIONS:
            eps = src.episodes(sp)  # type: ignore[arg-type]
            i = 0
            while i < len(eps):
                # Batches of whole episodes, ~ a few chunks at a time.
                j = i
                rows = 0
                while j < len(eps) and (rows == 0 or rows + eps[j, 1] <= 4 * cr):
                    rows += int(eps[j, 1])
                    j += 1
                s0 = int(eps[i, 0])
                s1 = int(eps[j - 1, 0] + eps[j - 1, 1])
                # Logical fields: a format-2 source rebuilds next_obs, a format-2 destination
                # keeps only obs plus each episode's final next_obs (either way round works).
                data = src.read_rows(sp, s0, s1)  # type: ignore[arg-type]
                base = part.end
                a, b = base, base + (s1 - s0)
                for f in dst.stored_fields:
                    arr = part.arrays[f.name]
                    if arr.shape[0] < b:
                        arr.resize((-(-b // cr) * cr, *f.shape))
                    arr[a:b] = data[f.name] if f.name in data else fill[f.name]  # type: ignore[index]
                part.rows = part.end = b
                for k in range(i, j):
                    part.open_start = base + int(eps[k, 0]) - s0
                    part.end = part.open_start + int(eps[k, 1])
                    last = int(eps[k, 0] + eps[k, 1]) - 1 - s0
                    dst._end_episode(part, int(eps[k, 2]), [data[n][last] for n in dst.next_obs_fields])
                part.end = part.open_start = b
                copied += j - i
                i = j
        if dst.fsync_policy != "never":
            for f in dst.stored_fields:
                fsync_path(dst.path / "data.zarr" / part.name / f.name / "zarr.json")
        dst.merged.append(src.meta["uuid"])
        dst._commit(new_wal=dst._wal is not None)
        return copied
    except BaseException:
        if dst.generation == gen0:
            (part.rows, part.end, part.n_eps, part.head_ep, part.head_row, part.open_start, part.eps_flushed,
             dst.merged, dst._replay_flags, part.final_pend) = saved
        raise
    finally:
        src.close()
