"""Load a LeRobot v3 dataset directory with the real ``lerobot`` package and dump what it returns.

Run by tests/interop/test_lerobot_package.py with the interpreter named by ``ROBORL_LEROBOT_PYTHON``
(a venv where ``import lerobot`` works)::

    python tests/interop/lerobot_load.py DATASET_DIR OUT.npz

Prints one JSON line: what LeRobotDataset read (frames, episodes, fps, features, camera keys) and
which frame decoder ran. LeRobot decodes video with torchcodec, or PyAV through torchvision.io; where
neither matches the installed torch (torchvision wheels are built for one torch version), this script
puts a stand-in ``torchvision`` module in place (LeRobot imports it at module level, for image
augmentations we do not use) and decodes the timestamps LeRobot asks for with PyAV directly. The
metadata, parquet, episode index and timestamp -> video-file lookup are LeRobot's own either way.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path


def _stub_torchvision() -> None:
    class _Any:
        def __init__(self, *a: object, **k: object) -> None:
            pass

    import importlib.machinery

    def mod(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__getattr__ = lambda attr: _Any  # type: ignore[method-assign]
        sys.modules[name] = m
        return m

    tv = mod("torchvision")
    tv.transforms = mod("torchvision.transforms")  # type: ignore[attr-defined]
    tv.transforms.v2 = mod("torchvision.transforms.v2")  # type: ignore[attr-defined]
    tv.transforms.v2.functional = mod("torchvision.transforms.v2.functional")  # type: ignore[attr-defined]
    tv.io = mod("torchvision.io")  # type: ignore[attr-defined]


def _pyav_decode(video_path: object, timestamps: list[float], tolerance_s: float, backend: object = None) -> object:
    """LeRobot's decode contract: frames at ``timestamps`` (seconds) as float32 [N, C, H, W] in [0, 1]."""
    import av
    import numpy as np
    import torch

    with av.open(str(video_path)) as c:
        s = c.streams.video[0]
        frames = [(float(f.pts * s.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    ts = np.array([t for t, _ in frames])
    out = []
    for q in timestamps:
        i = int(np.argmin(np.abs(ts - q)))
        if abs(ts[i] - q) >= tolerance_s:
            raise RuntimeError(f"no frame within {tolerance_s}s of {q}s in {video_path}")
        out.append(torch.from_numpy(frames[i][1]).permute(2, 0, 1))
    return torch.stack(out).float() / 255.0


def main() -> int:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    decoder = "lerobot"
    try:
        import torchvision  # noqa: F401
        import lerobot.datasets.lerobot_dataset  # noqa: F401
    except Exception:
        for k in [k for k in sys.modules if k.startswith(("torchvision", "lerobot"))]:
            del sys.modules[k]
        _stub_torchvision()
        decoder = "pyav (torchvision stand-in)"
    import numpy as np

    import lerobot
    import lerobot.datasets.lerobot_dataset as lds

    if decoder != "lerobot":
        lds.decode_video_frames = _pyav_decode
    ds = lds.LeRobotDataset("roborl/export-check", root=root)
    cams = list(ds.meta.video_keys)
    dump: dict[str, list] = {}
    for i in range(len(ds)):
        item = ds[i]
        for k, v in item.items():
            if hasattr(v, "numpy"):
                a = v.numpy()
                if k in cams:
                    a = np.round(a * 255.0).astype(np.uint8).transpose(1, 2, 0)  # [C, H, W] in [0, 1] -> uint8 HWC
                dump.setdefault(k, []).append(a)
    np.savez(out, **{k.replace("/", "|"): np.stack(v) for k, v in dump.items()})
    print(json.dumps({"lerobot": lerobot.__version__ if hasattr(lerobot, "__version__") else "?", "decoder": decoder,
                      "num_frames": ds.num_frames, "num_episodes": ds.num_episodes, "fps": ds.fps,
                      "camera_keys": cams, "features": sorted(ds.features)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
