"""Camera streams as mp4 files: encode uint8 frames with FFmpeg, decode them back (imageio-ffmpeg).

:data:`VIDEO_CODECS` maps ``--video-codec`` to the FFmpeg encoder and its settings:

* ``h264`` (default): libx264, yuv420p (yuv444p for odd sizes), CRF 18. Lossy: chroma is
  subsampled and quantised, so a round trip stays within codec tolerance, not bit-exact.
* ``av1``: libsvtav1, yuv420p, CRF 30: LeRobot's own default codec (smaller files, slower).
* ``lossless``: libx264rgb at ``-qp 0`` on rgb24 input: H.264's lossless mode in the RGB
  colour space (stored as planar ``gbrp``), so decoded frames equal the originals bit for bit.

All use a key frame every 2 frames (``-g 2``), as LeRobot does, so one frame decodes fast.
Frame ``k`` of a file has the presentation time ``k / fps``.

imageio-ffmpeg ships its own FFmpeg binary and is in the base install.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from roborl.errors import UsageError

__all__ = ["VIDEO_CODECS", "VideoWriter", "FrameReader", "probe"]

VIDEO_CODECS: dict[str, dict[str, Any]] = {
    "h264": {"encoder": "libx264", "pix_fmt": "yuv420p", "params": ["-crf", "18", "-preset", "medium"],
             "lossless": False},
    "av1": {"encoder": "libsvtav1", "pix_fmt": "yuv420p", "params": ["-crf", "30", "-preset", "8"], "lossless": False},
    "lossless": {"encoder": "libx264rgb", "pix_fmt": "rgb24", "params": ["-qp", "0", "-preset", "medium"],
                 "lossless": True},
}


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UsageError("camera streams need the 'imageio-ffmpeg' package: pip install 'roborl[video]'") from None
    return imageio_ffmpeg


class VideoWriter:
    """Appends [H, W, 3] uint8 frames to one mp4 file at ``fps`` with a :data:`VIDEO_CODECS` entry."""

    def __init__(self, path: Path, height: int, width: int, fps: int, codec: str = "h264") -> None:
        if codec not in VIDEO_CODECS:
            raise UsageError(f"--video-codec: unknown codec {codec!r} (one of {', '.join(VIDEO_CODECS)})")
        c = VIDEO_CODECS[codec]
        pix = c["pix_fmt"]
        if pix == "yuv420p" and (height % 2 or width % 2):
            pix = "yuv444p"  # 4:2:0 needs even sizes; 4:4:4 keeps the frame size unpadded
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = (int(height), int(width), 3)
        self.frames = 0
        # macro_block_size=1: never rescale the frames to a multiple of 16.
        self._gen = _ffmpeg().write_frames(str(self.path), (int(width), int(height)), fps=int(fps),
                                           codec=c["encoder"], pix_fmt_in="rgb24", pix_fmt_out=pix,
                                           output_params=[*c["params"], "-g", "2"], macro_block_size=1,
                                           ffmpeg_log_level="error")
        self._gen.send(None)

    def write(self, frames: np.ndarray) -> None:
        """frames: [N, H, W, 3] uint8."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or tuple(frames.shape[1:]) != self.shape:
            raise UsageError(f"{self.path}: frames must be uint8 {list(self.shape)}, got {frames.dtype}"
                             f"{list(frames.shape[1:])}")
        for f in frames:
            self._gen.send(np.ascontiguousarray(f))
        self.frames += len(frames)

    def close(self) -> None:
        self._gen.close()


def probe(path: Path) -> dict[str, Any]:
    """{codec, pix_fmt, width, height, fps} of an mp4 file as FFmpeg reports its video stream."""
    gen = _ffmpeg().read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(gen)
    finally:
        gen.close()
    w, h = (int(x) for x in meta["size"])
    return {"codec": str(meta.get("codec", "")).split()[0], "pix_fmt": str(meta.get("pix_fmt", "")).split("(")[0].strip(),
            "width": w, "height": h, "fps": float(meta.get("fps", 0.0))}


class FrameReader:
    """Sequential reader of one mp4 file: ``read(first, n)`` -> frames [first, first + n) as [n, H, W, 3] uint8.

    Calls must ask for non-decreasing ``first`` (episodes in file order); frames in between are skipped.
    ``what`` names the camera feature in errors.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        if not self.path.is_file():
            raise UsageError(f"camera {what!r}: video file {self.path} is missing")
        try:
            self._gen: Iterator[Any] = _ffmpeg().read_frames(str(self.path), pix_fmt="rgb24")
            meta = next(self._gen)  # type: ignore[call-overload]
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"camera {what!r}: cannot decode {self.path} ({type(e).__name__})") from None
        w, h = (int(x) for x in meta["size"])
        self.shape = (h, w, 3)
        self.pos = 0

    def read(self, first: int, n: int) -> np.ndarray:
        if first < self.pos:
            raise UsageError(f"camera {self.what!r}: episodes overlap in {self.path} (frame {first} after {self.pos})")
        out = np.empty((n, *self.shape), np.uint8)
        if n == 0:
            return out
        got = 0
        for buf in self._gen:
            if self.pos >= first:
                out[got] = np.frombuffer(buf, np.uint8).reshape(self.shape)
                got += 1
            self.pos += 1
            if got == n:
                break
        if got < n:
            raise UsageError(f"camera {self.what!r}: {self.path} has {self.pos} frames, fewer than the "
                             f"{first + n} the episodes need")
        return out

    def close(self) -> None:
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()
