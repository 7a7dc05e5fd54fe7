"""The resume rule: every online row in the store is a counted env step, through SIGKILLed `roborl train` runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roborl import config as C
from roborl.errors import UsageError
from roborl.runners.config import RunConfig
from roborl.runners.off_policy import OffPolicyRunner
from roborl.store import ReplayStore

SMALL = ["env.id=Pendulum-v1", "sac.hidden=[32,32]", "sac.batch_size=32", "sac.warmup_steps=100",
         "store.sampler.demo_fraction=0", "train.eval_episodes=1", "train.eval_every=0", "train.log_every=50"]


def _last_step(run_dir: Path) -> int:
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return 0
    steps = [json.loads(x)["step"] for x in p.read_text().splitlines() if x.strip().endswith("}")]
    return max(steps, default=0)


def _kill_when(proc: subprocess.Popen, cond: "callable", what: str) -> None:
    deadline = time.time() + 180
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        assert proc.poll() is None, f"run ended before {what}: " + proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _store_rows(store: Path) -> tuple[int, int]:
    s = ReplayStore.open(store)  # a writable open recovers the WAL and closes the interrupted episode
    try:
        return s.end_row("online"), s.total_episodes("online")
    finally:
        s.close()


def _args(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "roborl.cli", "train", "/dev/null", *SMALL, f"run.dir={tmp}", *extra]


ENV = dict(os.environ, ROBORL_QUIET="1")


def test_killed_before_first_checkpoint_counts_orphan_rows(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = _args(run_dir, "train.total_steps=1500", "train.checkpoint_every=100000")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    _kill_when(proc, lambda: _last_step(run_dir) >= 250, "250 steps")
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").glob("step_*"))
    rows, eps = _store_rows(run_dir / "store")
    assert 250 <= rows < 1500
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{rows} rows already in the store ({eps} episodes" in out.stdout, out.stdout
    assert f"starting at step {rows}" in out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] == 1500
    assert _store_rows(run_dir / "store")[0] == 1500  # counters == store (before the rule: rows + 1500)


def test_killed_after_a_checkpoint_counts_newer_rows(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = _args(run_dir, "train.total_steps=1500", "train.checkpoint_every=300")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    # Kill mid-episode (Pendulum episodes are 200 steps) some rows after the first checkpoint.
    _kill_when(proc, lambda: (run_dir / "checkpoints" / "latest").exists() and _last_step(run_dir) >= 450, "a checkpoint")
    ck = int((run_dir / "checkpoints" / "latest").read_text().strip().split("_")[-1])
    rows, eps = _store_rows(run_dir / "store")
    assert rows > ck
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resumed from step {ck}; {rows - ck} newer rows in the store" in out.stdout, out.stdout
    assert f"continuing at step {rows}" in out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] == 1500
    assert _store_rows(run_dir / "store")[0] == 1500


def test_a_store_replaced_under_a_checkpoint_is_refused(tmp_path: Path) -> None:
    import shutil

    cfg = C.load(RunConfig, None, SMALL + [f"run.dir={tmp_path / 'run'}", "train.total_steps=150",
                                           "train.checkpoint_every=1000"])
    r = OffPolicyRunner(cfg, tmp_path / "run")
    r.train()
    r.close()
    shutil.rmtree(tmp_path / "run" / "store")
    r2 = OffPolicyRunner(cfg, tmp_path / "run")
    with pytest.raises(UsageError, match="does not match checkpoint step_150"):
        r2.try_resume()
    r2.close()
    out = subprocess.run(_args(tmp_path / "run", "train.total_steps=150", "train.checkpoint_every=1000"),
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_learning_starts_at_warmup_inside_a_long_first_episode(tmp_path: Path) -> None:
    from roborl.runs import read_metrics

    # Episodes of 500 steps, warmup 150, budget 300: no episode ends before the budget is spent.
    cfg = C.load(RunConfig, None, SMALL + [f"run.dir={tmp_path / 'run'}", "env.max_episode_steps=500",
                                           "sac.warmup_steps=150", "train.total_steps=300",
                                           "train.checkpoint_every=1000"])
    r = OffPolicyRunner(cfg, tmp_path / "run")
    r.train()
    assert r.learning_started
    eps = r.store.episodes("online")
    r.close()
    # The open episode was cut at the learning start (interrupted, bootstraps) and continued.
    assert int(eps[0, 1]) == 150, eps
    rows = [x for x in read_metrics(tmp_path / "run") if any(k.endswith("loss") or "loss" in k for k in x)]
    assert rows and min(x["step"] for x in rows) <= 200, rows[:3]
