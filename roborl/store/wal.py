"""Write-ahead log: length- and CRC-framed step records, appended with ``os.write``.

File layout: an 8-byte file header ``b"RLWAL\\x01\\n\\n"`` then records::

    magic u32 | payload_len u32 | crc32 u32 | partition u8 | row u64 | payload (row bytes)

``crc32`` covers ``partition | row | payload``. A record is durable against ``kill -9``
once ``os.write`` returns (the bytes sit in the kernel page cache); power-loss
durability depends on the fsync policy (see :class:`roborl.store.config.StoreConfig`).

A reader stops at the first record that is short, has a bad magic or a bad CRC: that
is a torn tail from a crash (the step being written), and the writer truncates it. If
valid records FOLLOW the bad one (a hole from power loss or a flipped bit, never a crash
of one writer), it is not a tail: :func:`scan` reports them, and the store refuses to
cut them silently (``roborl store repair``).
The WAL in use is named in the commit file; each commit starts a fresh one, so a stale
log is never replayed twice.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

FILE_HEADER = b"RLWAL\x01\n\n"
MAGIC = 0x52574C31  # "1LWR"
_HDR = struct.Struct("<III")  # magic, payload_len, crc
_KEY = struct.Struct("<BQ")  # partition, row
HEADER_SIZE = _HDR.size + _KEY.size


# A stream episode record (``partition | STREAM_FLAG``): one whole episode of a named stream,
# written when it ends (see ReplayStore.start_episode(stream=...)). One record, so one CRC: it
# replays whole or not at all. Payload: u32 header length | JSON header | the rows' bytes.
STREAM_FLAG = 0x80
_U32 = struct.Struct("<I")


def encode_stream(partition: int, row: int, header: dict, rows: bytes) -> bytes:
    """One framed stream-episode record starting at logical ``row``; ``header``: stream, n, flags, rows."""
    import json

    h = json.dumps(header, separators=(",", ":")).encode()
    return encode(partition | STREAM_FLAG, row, _U32.pack(len(h)) + h + rows)


def decode_stream(payload: bytes) -> tuple[dict, bytes]:
    """(header, rows bytes) of a stream-episode record's payload."""
    import json

    try:
        (n,) = _U32.unpack_from(payload, 0)
    except struct.error as e:
        raise ValueError(f"stream record too short: {e}") from None
    return json.loads(payload[_U32.size: _U32.size + n]), payload[_U32.size + n:]


def encode(partition: int, row: int, payload: bytes) -> bytes:
    """One framed record."""
    key = _KEY.pack(partition, row)
    crc = zlib.crc32(payload, zlib.crc32(key))
    return _HDR.pack(MAGIC, len(payload), crc) + key + payload


@dataclass
class WalScan:
    """A parsed WAL: ``records`` [(partition, row, payload)] up to the first bad byte
    ``valid_bytes`` of ``file_bytes``; ``after`` are the valid records found past it (resyncing
    on the magic number), the first at byte ``resync_at`` (None when there are none)."""

    records: list[tuple[int, int, bytes]]
    valid_bytes: int
    file_bytes: int
    after: list[tuple[int, int, bytes]] = field(default_factory=list)
    resync_at: int | None = None

    @property
    def corrupt_middle(self) -> bool:
        """A bad record followed by valid ones: not a torn tail."""
        return bool(self.after)


_MAGIC_BYTES = struct.pack("<I", MAGIC)


def _record_at(data: bytes, mv: memoryview, off: int) -> tuple[tuple[int, int, bytes], int] | None:
    """The valid record at ``off`` and its end, or None."""
    n = len(data)
    if off + HEADER_SIZE > n:
        return None
    magic, plen, crc = _HDR.unpack_from(data, off)
    end = off + HEADER_SIZE + plen
    if magic != MAGIC or end > n:
        return None
    key = mv[off + _HDR.size: off + HEADER_SIZE]
    payload = mv[off + HEADER_SIZE: end]
    if zlib.crc32(payload, zlib.crc32(key)) != crc:
        return None
    part, row = _KEY.unpack(key)
    return (part, row, bytes(payload)), end


def scan(path: str | Path) -> WalScan:
    """Parse a WAL file, including valid records past a bad one (see :class:`WalScan`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return WalScan([], 0, 0)
    n = len(data)
    mv = memoryview(data)
    out: list[tuple[int, int, bytes]] = []
    if n < len(FILE_HEADER):
        # A crash between creating the file and writing its header leaves it shorter.
        return WalScan([], 0, n)
    off = 0
    if data[: len(FILE_HEADER)] == FILE_HEADER:
        off = len(FILE_HEADER)
        while (got := _record_at(data, mv, off)) is not None:
            out.append(got[0])
            off = got[1]
    res = WalScan(out, off, n)  # a damaged file header: every record is "after" it
    # Past the bad record: look for more valid records (a torn tail has none; the search
    # covers at most the rest of the file, which is at most one chunk of rows).
    pos = data.find(_MAGIC_BYTES, off + 1)
    while pos != -1:
        got = _record_at(data, mv, pos)
        if got is None:
            pos = data.find(_MAGIC_BYTES, pos + 1)
            continue
        if res.resync_at is None:
            res.resync_at = pos
        res.after.append(got[0])
        pos = got[1]
    return res


def read(path: str | Path) -> tuple[list[tuple[int, int, bytes]], int, int]:
    """Parse a WAL file -> (records [(partition, row, payload)], valid_bytes, file_bytes).

    ``valid_bytes < file_bytes`` means a torn or corrupt tail starts at ``valid_bytes``.
    A missing file reads as empty.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    n = len(data)
    if n < len(FILE_HEADER) or data[: len(FILE_HEADER)] != FILE_HEADER:
        # A crash between creating the file and writing its header leaves it shorter.
        return [], 0, n
    out: list[tuple[int, int, bytes]] = []
    off = len(FILE_HEADER)
    mv = memoryview(data)
    while off + HEADER_SIZE <= n:
        magic, plen, crc = _HDR.unpack_from(data, off)
        if magic != MAGIC:
            break
        end = off + HEADER_SIZE + plen
        if end > n:
            break
        key = mv[off + _HDR.size: off + HEADER_SIZE]
        payload = mv[off + HEADER_SIZE: end]
        if zlib.crc32(payload, zlib.crc32(key)) != crc:
            break
        part, row = _KEY.unpack(key)
        out.append((part, row, bytes(payload)))
        off = end
    return out, off, n


class WalWriter:
    """Appends records to one log file (O_APPEND, unbuffered)."""

    def __init__(self, path: str | Path, *, create: bool) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self.fd = os.open(self.path, flags, 0o644)
        if create or os.fstat(self.fd).st_size == 0:
            os.ftruncate(self.fd, 0)
            self._write(FILE_HEADER)
        self.dirty = False

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def append(self, data: bytes) -> None:
        """Write already-framed record bytes (one or many records)."""
        self._write(data)
        self.dirty = True

    def fsync(self) -> None:
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def truncate(path: str | Path, size: int) -> None:
    """Cut a torn tail (keeps the file header)."""
    size = max(size, len(FILE_HEADER))
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
