"""Cheap checks of zarr chunk files, without decoding them.

zarr returns the fill value for a chunk file that is missing, so a lost chunk would read
back as zeros: every chunk under the committed rows must exist. Each chunk file is one
zstd frame (RFC 8878) of exactly ``chunk_rows * row_bytes`` content bytes with a content
checksum. :func:`chunk_problem` walks the frame's header and block headers (a few small
reads per chunk, no decompression) and checks that they add up to the file size: this
catches missing, empty, zero-filled, truncated and extended files; a bit flip inside a
compressed block needs a full decode (its checksum), which ``store verify`` does.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

ZSTD_MAGIC = 0xFD2FB528
_BLOCK_MAX = 128 * 1024  # zstd's maximum block content size


def chunk_problem(path: Path, content_bytes: int) -> str | None:
    """None when ``path`` looks like a complete zstd frame of ``content_bytes``; else why not."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "is missing (zarr would read it as zeros)"
    try:
        with open(path, "rb") as f:
            head = f.read(18)
            if len(head) < 6:
                return f"is {size} bytes, too short for a zstd frame"
            if struct.unpack_from("<I", head)[0] != ZSTD_MAGIC:
                return "does not start with a zstd frame (zeroed or overwritten)"
            fhd = head[4]
            fcs_flag, single, reserved, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 3) & 1, (fhd >> 2) & 1, fhd & 3
            if reserved:
                return "has a bad zstd frame header"
            off = 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag]
            fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
            if fcs_size:
                if off + fcs_size > len(head):
                    return "has a truncated zstd frame header"
                raw = int.from_bytes(head[off: off + fcs_size], "little") + (256 if fcs_size == 2 else 0)
                if raw != content_bytes:
                    return f"holds {raw} bytes, expected {content_bytes}"
            off += fcs_size
            while True:
                f.seek(off)
                b = f.read(3)
                if len(b) < 3:
                    return f"is truncated ({size} bytes, a zstd block header at byte {off} is cut)"
                h = int.from_bytes(b, "little")
                last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
                if btype == 3 or bsize > _BLOCK_MAX:
                    return f"has a bad zstd block header at byte {off}"
                off += 3 + (1 if btype == 1 else bsize)
                if off > size:
                    return f"is truncated ({size} bytes, zstd blocks need {off})"
                if last:
                    break
            off += 4 if checksum else 0
    except OSError as e:
        return f"is unreadable ({e.strerror})"
    if off != size:
        return f"is {size} bytes but its zstd frame is {off} (truncated or extended)"
    return None
