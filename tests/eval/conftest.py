"""Shared fixtures for the eval tests: one real, tiny training run through the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _roborl(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m roborl.cli ARGS`` in a subprocess (real CLI, real exit code)."""
    env = dict(os.environ, ROBORL_QUIET="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    return subprocess.run([sys.executable, "-m", "roborl.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO run on Pendulum-v1: 1024 env steps, eval rounds at 512 and 1024, checkpoints at both."""
    root = tmp_path_factory.mktemp("eval_runs")
    run_dir = root / "ppo_pendulum"
    cfg = root / "ppo_pendulum.yaml"
    cfg.write_text("run: {name: ppo-pendulum, seed: 0}\nenv: {id: Pendulum-v1}\n")
    p = _roborl("train", str(cfg), f"run.dir={run_dir}", "train.algo=ppo",
               "train.total_steps=1024", "train.eval_every=512", "train.eval_episodes=3",
               "train.checkpoint_every=512", "train.log_every=256", "ppo.n_envs=2", "ppo.rollout_steps=256",
               "ppo.vector=sync", "device=cpu")
    assert p.returncode == 0, p.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def roborl():
    """``roborl(*args) -> CompletedProcess``: the real CLI in a subprocess."""
    return _roborl
