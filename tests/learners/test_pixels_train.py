"""`roborl train` / `roborl eval` with camera observations (renders: skips without a GL backend)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roborl.checkpoint import load_checkpoint

CFG = {
    "run": {"seed": 0},
    "device": "cpu",
    "env": {"id": "roborl/Reach-v0", "kwargs": {"obs_mode": "proprio+pixels", "image_size": 32, "cameras": ["front"]}},
    "train": {"algo": "sac", "total_steps": 120, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 120,
              "log_every": 60, "threads": 1},
    "store": {"online_capacity": 1000},
    "sac": {"hidden": [32, 32], "batch_size": 16, "warmup_steps": 60,
            "encoder": {"channels": 8, "layers": 2, "feature_dim": 16, "pad": 2}},
}


def test_train_resume_and_eval_with_cameras(tmp_path: Path, gl_env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(cfg), f"run.dir={run}"], env=gl_env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    _, meta, step = load_checkpoint(run)
    assert step == 120 and meta["obs_spec"]["pixels.front"] == [32, 32, 3]
    e = subprocess.run([sys.executable, "-m", "roborl.cli", "eval", str(run), "--episodes", "1", "--json"], env=gl_env,
                       capture_output=True, text=True, timeout=600)
    assert e.returncode == 0, e.stderr[-2000:]
    assert '"episodes"' in e.stdout or "return" in e.stdout
