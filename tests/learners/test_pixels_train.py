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



def _collect_pixel_demos(tmp_path: Path, gl_env: dict) -> Path:
    """Two scripted Reach episodes with a 32x32 front camera, collected by `roborl collect`: the demo store."""
    demos = tmp_path / "demos"
    c = subprocess.run([sys.executable, "-m", "roborl.cli", "collect", "--env", "roborl/Reach-v0", "--policy", "scripted",
                        "--store", str(demos), "--episodes", "2", "--noise", "0.1", "env.kwargs.obs_mode=proprio+pixels",
                        "env.kwargs.image_size=32", "env.kwargs.cameras=[front]"], env=gl_env, capture_output=True,
                       text=True, timeout=600)
    assert c.returncode == 0, c.stderr[-2000:]
    return demos

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


def test_train_pretrains_the_frozen_encoder_on_demos_at_startup(tmp_path: Path, gl_env: dict[str, str]) -> None:
    """sac.encoder.pretrain_steps with no weights: BC-pretrain on the demo partition once, save it in the
    run dir, train with it frozen; a resume reuses the file (configs/pixels_push.yaml from a fresh clone)."""
    import copy
    import os

    from roborl.learners.encoders import read_encoder_meta

    demos = _collect_pixel_demos(tmp_path, gl_env)
    cfg = copy.deepcopy(CFG)
    cfg["store"] = {"online_capacity": 1000, "demos": [str(demos)]}
    cfg["sac"] = {"hidden": [32, 32], "batch_size": 16, "warmup_steps": 0, "bc_pretrain_steps": 5, "residual": True,
                  "encoder": {"channels": 8, "layers": 2, "feature_dim": 16, "downsample": 2, "pretrain_steps": 4}}
    cfg["train"] = {**CFG["train"], "total_steps": 60, "checkpoint_every": 60}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"

    def train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(path), f"run.dir={run}", *extra],
                              env=gl_env, capture_output=True, text=True, timeout=600)

    r = train()
    assert r.returncode == 0, r.stderr[-2000:]
    enc = run / "encoder.safetensors"
    meta = read_encoder_meta(enc)
    assert meta["objective"] == "bc_random_shift" and meta["config"]["steps"] == 4 and meta["demo_steps"] > 0
    assert meta["input_shapes"] == {"pixels.front": [3, 32, 32]}
    _, ck, step = load_checkpoint(run)
    assert step == 60 and ck["config"]["sac"]["encoder"]["weights"] == str(enc)
    mtime = os.stat(enc).st_mtime_ns
    r = train("train.total_steps=90")  # resume: the same encoder file, not a new pretraining
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.stat(enc).st_mtime_ns == mtime and "encoder pretrained" not in r.stdout
    assert load_checkpoint(run)[2] == 90


@pytest.mark.parametrize("objective,bc_steps,written", [("autoencoder", 0, "spatial_autoencoder"),
                                                         ("contrastive", 0, "episode_contrastive"),
                                                         ("contrastive", 3, "bc_random_shift")])
def test_train_pretrains_a_keypoint_encoder_on_demos_and_random_frames(tmp_path: Path, gl_env: dict[str, str],
                                                                       objective: str, bc_steps: int,
                                                                       written: str) -> None:
    """sac.encoder.pretrain_objective=autoencoder|contrastive with pretrain_random_episodes: the run records
    random-action episodes into <run dir>/pretrain_frames, pretrains the keypoint encoder on them and the
    demos (no actions needed), trains frozen. With pretrain_bc_steps, a BC fine-tune on the demos follows."""
    import copy

    from roborl.learners.encoders import read_encoder_meta

    demos = _collect_pixel_demos(tmp_path, gl_env)
    cfg = copy.deepcopy(CFG)
    cfg["store"] = {"online_capacity": 1000, "demos": [str(demos)]}
    cfg["sac"] = {"hidden": [32, 32], "batch_size": 16, "warmup_steps": 0, "bc_pretrain_steps": 5, "residual": True,
                  "encoder": {"channels": 8, "layers": 2, "feature_dim": 16, "downsample": 2, "pretrain_steps": 4,
                              "arch": "keypoints", "pretrain_objective": objective, "pretrain_random_episodes": 2,
                              "pretrain_bc_steps": bc_steps}}
    cfg["train"] = {**CFG["train"], "total_steps": 60, "checkpoint_every": 60}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(path), f"run.dir={run}"], env=gl_env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_encoder_meta(run / "encoder.safetensors")
    assert meta["objective"] == written and meta["arch"] == "keypoints"
    if bc_steps:  # stage two: BC on the demos only, from stage one's file (kept next to it)
        assert meta["init"] == str(run / "encoder_contrastive.safetensors") and len(meta["stores"]) == 1
        assert "encoder fine-tuned (bc)" in r.stdout
        meta = read_encoder_meta(run / "encoder_contrastive.safetensors")
    assert [s["episodes"] for s in meta["stores"]] == [2, 2] and meta["stores"][1]["path"].endswith("pretrain_frames")
    assert "random-action episodes" in r.stdout
    _, ck, step = load_checkpoint(run)
    assert step == 60 and ck["config"]["sac"]["encoder"]["arch"] == "keypoints"


def test_bc_fine_tune_without_a_label_free_stage_is_refused_in_one_line(tmp_path: Path, gl_env: dict[str, str]) -> None:
    import copy

    demos = _collect_pixel_demos(tmp_path, gl_env)
    cfg = copy.deepcopy(CFG)
    cfg["store"] = {"online_capacity": 1000, "demos": [str(demos)]}
    cfg["sac"] = {"hidden": [32, 32], "batch_size": 16, "warmup_steps": 0, "residual": True,
                  "encoder": {"channels": 8, "layers": 2, "feature_dim": 16, "downsample": 2, "pretrain_steps": 4,
                              "pretrain_objective": "bc", "pretrain_bc_steps": 3}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(path), f"run.dir={tmp_path / 'run'}"],
                       env=gl_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "pretrain_bc_steps" in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
