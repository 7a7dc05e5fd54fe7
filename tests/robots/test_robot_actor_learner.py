"""Actor/learner split with real processes on loopback: kill -9 the learner mid-run and restart it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from roborl.robots.launch import free_port

CFG = """
env: {id: roborl/Reach-v0}
train: {algo: sac, total_steps: 900, eval_every: 0, checkpoint_every: 200, log_every: 100}
store: {online_capacity: 100000, sampler: {kind: uniform, demo_fraction: 0.0}}
sac: {hidden: [16, 16], batch_size: 16, warmup_steps: 100}
distributed: {actor_hz: 250, push_every: 20, timeout_s: 2.0, linger_s: 3.0}
"""


def _train(cfg: Path, run_dir: Path, role: str, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "roborl.cli", "train", str(cfg), f"run.dir={run_dir}",
                             "--role", role, "--learner", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # One torch thread: on a shared 2-core box, OpenMP spinning makes a tiny
                            # SAC update take ~0.4 s instead of ~7 ms.
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def _wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_learner_killed_and_restarted_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    import gymnasium as gym

    import roborl  # noqa: F401
    from roborl.store.store import ReplayStore

    if "roborl/Reach-v0" not in gym.registry:
        pytest.skip("roborl/Reach-v0 not available")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    port = free_port()
    L, A = tmp_path / "learner", tmp_path / "actor"
    learner = _train(cfg, L, "learner", port)
    actor = _train(cfg, A, "actor", port)
    procs = [learner, actor]
    try:
        _wait_for(lambda: (L / "checkpoints" / "latest").exists() or actor.poll() is not None, 120,
                  "the learner's first checkpoint")
        assert actor.poll() is None, "actor finished before the learner could be killed"
        learner.kill()  # SIGKILL mid-run: no goodbye, store WAL left open
        learner.wait(timeout=30)
        time.sleep(1.5)  # the actor keeps acting meanwhile
        learner = _train(cfg, L, "learner", port)
        procs.append(learner)
        a_out, a_err = actor.communicate(timeout=240)
        l_out, l_err = learner.communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert actor.returncode == 0, a_err[-2000:]
    assert learner.returncode == 0, l_err[-2000:]
    summary = json.loads(a_out.strip().splitlines()[-1])
    assert summary["unacked"] == 0 and summary["env_steps"] == 900
    assert summary["disconnects"] >= 1 and summary["steps_while_disconnected"] > 0
    assert "resumed from step" in l_err

    lst, ast = ReplayStore.open(L / "store", mode="r"), ReplayStore.open(A / "store", mode="r")
    try:
        n = ast.parts["online"].end
        assert n == 900 and lst.parts["online"].end == n  # nothing lost, nothing duplicated
        a = ast.read_rows("online", 0, n)
        b = lst.read_rows("online", 0, n)
        for k in ("obs", "action", "executed_action", "reward", "next_obs", "terminated", "truncated"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert lst.num_steps("online") == n
    finally:
        lst.close()
        ast.close()
