"""The episode index of one store partition: logical rows, ended episodes, the eviction head.

Pure numpy, no zarr: the store keeps one :class:`PartitionIndex` per partition and updates it
as steps arrive; samplers, ``verify`` and tools read it through the methods below (get one
with :meth:`roborl.store.ReplayStore.index`). Rows are *logical* row numbers that only grow;
episodes are numbered absolutely from 0 (evicted ones included), so a reader can remember
"I have seen episodes up to n" across appends and evictions.

Counters (read them; only the store writes them)::

    head_row <= rows <= end        head_ep <= n_eps
    rows      rows durably in zarr and committed
    end       next logical row (rows + pending, incl. the open episode's)
    head_row  first live (not evicted) row      head_ep  first live episode
    n_eps     episodes ended so far (absolute count, incl. evicted ones)

The episode table is int64 [n_eps, 3]: (start row, length, flags), flags a bit field of
``EP_*`` below. Live episodes are contiguous: ``start[i + 1] == start[i] + length[i]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PARTITIONS: tuple[str, str] = ("demo", "online")
PART_ID = {"demo": 0, "online": 1}

# Episode flags (bit field in the table's column 2).
EP_SUCCESS = 1       # some step had is_success
EP_TERMINATED = 2    # last step terminated (no bootstrap)
EP_TRUNCATED = 4     # last step truncated
EP_INTERRUPTED = 8   # closed without terminated/truncated (crash, start_episode, close)


@dataclass
class PartitionIndex:
    """Rows and episodes of one partition (see the module docstring for the counters)."""

    name: str
    pid: int
    rows: int = 0            # rows durably in zarr and committed
    end: int = 0             # next logical row (rows + pending)
    head_row: int = 0        # first live row (online eviction)
    head_ep: int = 0         # first live episode
    n_eps: int = 0           # episodes ended (absolute count, incl. evicted)
    eps_flushed: int = 0     # episodes written to the zarr index
    freed_chunks: int = 0    # chunks [0, freed_chunks) deleted from disk
    open_start: int = 0      # start row of the (possibly empty) episode being written
    _table: np.ndarray = field(default_factory=lambda: np.zeros((64, 3), np.int64), repr=False)  # [cap, 3]

    # ------------------------------------------------------------------ public reads

    @property
    def num_episodes(self) -> int:
        """Live ended episodes."""
        return self.n_eps - self.head_ep

    def episode_counts(self) -> tuple[int, int]:
        """(head_ep, n_eps): cheap change detection for samplers."""
        return self.head_ep, self.n_eps

    def episodes(self, first: int | None = None, stop: int | None = None) -> np.ndarray:
        """Episodes [first, stop) by absolute number (default: the live ones) -> int64 [E, 3]
        (start row, length, flags). A read-only VIEW of the index: copy it to keep it."""
        a = self.head_ep if first is None else int(first)
        b = self.n_eps if stop is None else int(stop)
        if not 0 <= a <= b <= self.n_eps:
            raise IndexError(f"{self.name}: episodes [{a}, {b}) outside [0, {self.n_eps})")
        v = self._table[a:b]
        v.flags.writeable = False  # a view: the caller must not edit the store's index
        return v

    def episode_starts(self, first: int | None = None, stop: int | None = None) -> np.ndarray:
        """First logical row of each episode, int64 [E]."""
        return self.episodes(first, stop)[:, 0]

    def episode_lengths(self, first: int | None = None, stop: int | None = None) -> np.ndarray:
        """Steps of each episode, int64 [E]."""
        return self.episodes(first, stop)[:, 1]

    def episode_ends(self, first: int | None = None, stop: int | None = None) -> np.ndarray:
        """One past the last logical row of each episode, int64 [E]."""
        e = self.episodes(first, stop)
        return e[:, 0] + e[:, 1]

    def episode_flags(self, first: int | None = None, stop: int | None = None) -> np.ndarray:
        """``EP_*`` bit field of each episode, int64 [E]."""
        return self.episodes(first, stop)[:, 2]

    def live_steps(self) -> int:
        """Steps in ended, live episodes."""
        if self.n_eps == self.head_ep:
            return 0
        return int(self._table[self.n_eps - 1, 0] + self._table[self.n_eps - 1, 1] - self.head_row)

    def live_rows(self) -> tuple[int, int]:
        """[first, stop) logical rows of the ended live episodes (first == stop when there are none)."""
        if self.n_eps == self.head_ep:
            return self.head_row, self.head_row
        return int(self._table[self.head_ep, 0]), int(self._table[self.n_eps - 1, 0] + self._table[self.n_eps - 1, 1])

    def table_problems(self) -> list[str]:
        """Inconsistencies of the live episode table (empty when sound): what a lost or
        zeroed index chunk, or a hand-edited COMMIT.json, looks like."""
        out: list[str] = []
        if not (0 <= self.head_ep <= self.n_eps):
            return [f"head_episode {self.head_ep} outside [0, {self.n_eps}]"]
        eps = self._table[self.head_ep: self.n_eps]
        if len(eps):
            if eps[0, 0] != self.head_row:
                out.append(f"first live episode starts at row {eps[0, 0]}, head_row is {self.head_row}")
            if np.any(eps[:, 1] <= 0):
                out.append("episode with length <= 0")
            if np.any(eps[1:, 0] != eps[:-1, 0] + eps[:-1, 1]):
                out.append("episodes are not contiguous")
            if eps[-1, 0] + eps[-1, 1] > self.rows:
                out.append(f"last episode ends at row {eps[-1, 0] + eps[-1, 1]} past the committed rows {self.rows}")
        return out

    # ------------------------------------------------------------------ store-side updates

    def append_episode(self, start: int, length: int, flags: int) -> None:
        """Record an ended episode (the store calls this)."""
        if self.n_eps >= len(self._table):
            self._table = np.concatenate([self._table, np.zeros_like(self._table)])
        self._table[self.n_eps] = (start, length, flags)
        self.n_eps += 1

    def load_table(self, table: np.ndarray) -> None:
        """Replace the table with ``table`` int64 [n_eps, 3] (read from zarr on open)."""
        n = len(table)
        self._table = np.zeros((max(64, 1 << max(0, n).bit_length()), 3), np.int64)
        self._table[:n] = table
        self.n_eps = n

    def raw_table(self, first: int, stop: int) -> np.ndarray:
        """A writable slice of the table (for the store's flush to zarr)."""
        return self._table[first:stop]
