"""The real `lerobot` package loads our LeRobot v3 export: LeRobotDataset reads the metadata, parquet, episode
index and camera streams, and every frame it returns equals the store's (lossless export).

`pip install lerobot` into this environment would replace torch (it pins torch<2.11, CUDA wheels), so this test
runs LeRobot in a separate interpreter: set ROBORL_LEROBOT_PYTHON to a venv's python where `import lerobot`
works, e.g.::

    python -m venv --system-site-packages /tmp/lrvenv
    /tmp/lrvenv/bin/pip install --no-deps lerobot accelerate
    /tmp/lrvenv/bin/pip install "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" jsonlines einops \
        draccus==0.10.0 deepdiff termcolor
    ROBORL_LEROBOT_PYTHON=/tmp/lrvenv/bin/python pytest tests/interop/test_lerobot_package.py

Without it the test skips (test_lerobot.py / test_lerobot_video.py check the published v3 schema with pyarrow).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_lerobot_video import FPS, _make_store, _rows  # noqa: E402

LEROBOT_PYTHON = os.environ.get("ROBORL_LEROBOT_PYTHON")


@pytest.mark.skipif(not LEROBOT_PYTHON, reason="set ROBORL_LEROBOT_PYTHON to a python where `import lerobot` works")
def test_lerobot_dataset_loads_our_export(tmp_path: Path, store_cli) -> None:
    store = _make_store(tmp_path / "cams")
    out = tmp_path / "lr"
    p = store_cli("export", str(store), "--format", "lerobot", "--out", str(out), "--fps", str(FPS),
                  "--video-codec", "lossless")
    assert p.returncode == 0, p.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    q = subprocess.run([LEROBOT_PYTHON, str(Path(__file__).parent / "lerobot_load.py"), str(out),
                        str(tmp_path / "got.npz")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert q.returncode == 0, q.stderr[-3000:]
    res = json.loads(q.stdout.strip().splitlines()[-1])
    print(res)
    assert res["num_frames"] == 30 and res["num_episodes"] == 4 and res["fps"] == FPS
    assert res["camera_keys"] == ["observation.images.front", "observation.images.wrist"]
    got = dict(np.load(tmp_path / "got.npz"))
    want = _rows(store)
    np.testing.assert_array_equal(got["index"], np.arange(30))
    assert got["action"].tobytes() == want["action"].tobytes()
    assert got["observation.proprio"].tobytes() == want["obs.proprio"].tobytes()
    assert got["next.reward"].tobytes() == want["reward"].tobytes()
    for cam in ("front", "wrist"):
        np.testing.assert_array_equal(got[f"observation.images.{cam}"], want[f"obs.pixels.{cam}"])
