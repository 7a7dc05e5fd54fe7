"""Off-policy runner (SAC): a short Pendulum run improves, exact resume, kill -9 resume through the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from roborl import config as C
from roborl.runners.config import RunConfig
from roborl.runners.off_policy import OffPolicyRunner

SMALL = ["env.id=Pendulum-v1", "sac.hidden=[64,64]", "sac.batch_size=64", "sac.warmup_steps=200",
         "store.sampler.demo_fraction=0", "train.eval_episodes=2", "train.log_every=100"]


def cfg_for(tmp: Path, *extra: str) -> RunConfig:
    return C.load(RunConfig, None, SMALL + [f"run.dir={tmp}"] + list(extra))


def test_pendulum_training_clearly_improves(tmp_path: Path) -> None:
    from roborl.eval.episodes import run_episodes
    from roborl.learners.sac import SACPolicy

    cfg = cfg_for(tmp_path / "run", "train.total_steps=3500", "train.eval_every=0", "train.eval_episodes=5",
                  "sac.lr=1e-3", "train.checkpoint_every=100000")
    runner = OffPolicyRunner(cfg, tmp_path / "run")
    before = run_episodes(SACPolicy(runner.learner), cfg.env, 5, seed=123).return_mean
    summary = runner.train()
    after = run_episodes(SACPolicy(runner.learner), cfg.env, 5, seed=123).return_mean
    runner.close()
    # Random/untrained policies score about -1200 to -1500; a learning SAC is far above that by now.
    assert after > before + 300, (before, after, summary)


def test_resume_gives_identical_next_batch_and_parameters(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path / "run", "train.total_steps=400", "train.eval_every=0", "train.checkpoint_every=400")
    r1 = OffPolicyRunner(cfg, tmp_path / "run")
    r1.train()
    # State right after the final checkpoint: the next batch and the next update.
    b1 = r1.sampler.sample(64, gamma=0.99, step=r1.step)
    r1.learner.update(b1)
    p1 = [p.detach().clone() for p in r1.learner.parameters()]
    r1.close()

    r2 = OffPolicyRunner(cfg, tmp_path / "run")
    assert r2.try_resume() and r2.step == 400
    b2 = r2.sampler.sample(64, gamma=0.99, step=r2.step)
    for k in ("obs", "action", "reward", "next_obs", "discount", "index"):
        torch.testing.assert_close(getattr(b1, k), getattr(b2, k), rtol=0, atol=0)
    r2.learner.update(b2)
    for a, b in zip(p1, r2.learner.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
    r2.close()


def test_stores_executed_action_and_checkpoint_meta(tmp_path: Path) -> None:
    from roborl.checkpoint import load_checkpoint

    cfg = cfg_for(tmp_path / "run", "train.total_steps=250", "train.eval_every=0", "train.checkpoint_every=1000")
    r = OffPolicyRunner(cfg, tmp_path / "run")
    r.train()
    gen = r.store.generation
    r.close()
    state, meta, step = load_checkpoint(tmp_path / "run")
    assert meta["algo"] == "sac" and step == 250 and meta["store_generation"] == gen
    assert meta["config"]["env"]["id"] == "Pendulum-v1"
    assert {"learner", "sampler", "rng", "counters"} <= set(state)
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "metrics.jsonl").exists()


def test_kill_9_then_resume_through_cli(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {total_steps: 1500, checkpoint_every: 300, eval_every: 0, eval_episodes: 1}\n")
    args = [sys.executable, "-m", "roborl.cli", "train", str(cfg), *SMALL, f"run.dir={run_dir}"]
    env = dict(os.environ, ROBORL_QUIET="1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("step_*")):
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resumed from step" in out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] == 1500
    v = subprocess.run([sys.executable, "-m", "roborl.cli", "store", "verify", str(run_dir / "store"), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["ok"] is True


def test_bad_demo_path_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "train", "/dev/null", *SMALL, f"run.dir={tmp_path}/r",
                        "store.demos=[no/such/demos]", "train.total_steps=1000"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "store.demos" in r.stderr and "Traceback" not in r.stderr


def test_scripted_interventions_are_flagged_and_copied_to_demo(tmp_path: Path) -> None:
    from roborl.runs import read_metrics
    from roborl.store import ReplayStore

    cfg = C.load(RunConfig, None, ["env.id=roborl/Reach-v0", f"run.dir={tmp_path}/run", "train.total_steps=150",
                                   "train.eval_every=0", "train.eval_episodes=1", "sac.warmup_steps=149",
                                   "store.sampler.demo_fraction=0", "intervention.source=scripted",
                                   "intervention.every=1", "intervention.start_step=5", "intervention.duration=10"])
    r = OffPolicyRunner(cfg, tmp_path / "run")
    r.train()
    r.close()
    store = ReplayStore.open(tmp_path / "run" / "store", mode="r")
    online = store.read_rows("online", 0, store.num_steps("online"))
    demo = store.read_rows("demo", 0, store.num_steps("demo"))
    # 3 episodes x 10 takeover steps, flagged online and copied whole to the demo partition.
    assert int(online["intervention"].sum()) == 30
    assert store.num_episodes("demo") == 3 and bool(demo["intervention"].all()) and len(demo["reward"]) == 30
    # The executed action of a takeover step is the operator's, not the (random) policy proposal.
    flagged = online["intervention"].astype(bool)
    assert not np.allclose(online["action"][flagged], online["executed_action"][flagged])
    rates = [m["train/intervention_rate"] for m in read_metrics(tmp_path / "run") if "train/intervention_rate" in m]
    assert rates and all(abs(x - 10 / 50) < 1e-6 for x in rates)
    store.close()


def test_float64_gymnasium_mujoco_env_trains(tmp_path: Path) -> None:
    """gymnasium's MuJoCo envs emit float64 observations; the store keeps them, the learner casts."""
    cfg = C.load(RunConfig, None, ["env.id=InvertedPendulum-v5", f"run.dir={tmp_path}/run", "train.total_steps=120",
                                   "train.eval_every=0", "train.eval_episodes=1", "sac.hidden=[32,32]",
                                   "sac.batch_size=32", "sac.warmup_steps=50", "store.sampler.demo_fraction=0"])
    r = OffPolicyRunner(cfg, tmp_path / "run")
    summary = r.train()
    r.close()
    assert summary["env_steps"] == 120


@pytest.mark.parametrize("overrides, needle", [
    (["env.id=Pendulum-v1"], "Pendulum-v1 has no goal to relabel"),
    (["env.terminate_on_success=true"], "cannot be combined with env.terminate_on_success"),
])
def test_her_misconfiguration_is_one_line(tmp_path: Path, overrides: list[str], needle: str) -> None:
    r = subprocess.run([sys.executable, "-m", "roborl.cli", "train", "/dev/null", f"run.dir={tmp_path}/r",
                        "store.sampler.her_fraction=0.5", "train.total_steps=2000", *overrides],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "store.sampler.her_fraction" in r.stderr and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # checked before anything is written
