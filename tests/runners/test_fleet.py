"""Several actors into one learner, real processes on 127.0.0.1: kill -9 an actor and the learner
mid-run and restart them; every actor's rows are stored exactly once (content hashes), the
learner's step count is the sum of the actors' real steps, and a second live process presenting
an identity already connected is refused with one line. One actor steps a vector of sims."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from roborl.robots.launch import free_port

STEPS = 400  # per actor
CFG = f"""
env: {{id: Pendulum-v1, max_episode_steps: 40}}
train: {{algo: sac, total_steps: {STEPS}, eval_every: 0, checkpoint_every: 150, log_every: 100}}
store: {{online_capacity: 100000, sampler: {{kind: uniform, demo_fraction: 0.0}}}}
sac: {{hidden: [16, 16], batch_size: 16, warmup_steps: 60, utd: 1}}
distributed: {{actor_hz: 80, push_every: 10, timeout_s: 2.0, linger_s: 5.0, send_every: 16}}
"""
HASHED = ("obs", "action", "executed_action", "reward", "next_obs", "terminated", "truncated")


def _train(cfg: Path, run_dir: Path, role: str, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "roborl.cli", "train", str(cfg), f"run.dir={run_dir}",
                             "--role", role, "--learner", f"127.0.0.1:{port}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def _actor(cfg: Path, tmp: Path, name: str, aid: str, seed: int, port: int) -> subprocess.Popen:
    # a2 steps a vector of 3 sims (one store stream each in its own store).
    extra = ["distributed.num_envs=3"] if aid == "a2" else []
    return _train(cfg, tmp / name, "actor", port, f"run.seed={seed}", "--actor-id", aid, *extra)


def _wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ckpt_step(run_dir: Path) -> int:
    latest = run_dir / "checkpoints" / "latest"
    try:
        return int(latest.read_text().strip().split("_")[-1])
    except (FileNotFoundError, ValueError):
        return -1


def _row_hashes(store_path: Path) -> tuple[collections.Counter, int]:
    from roborl.store.store import ReplayStore

    st = ReplayStore.open(store_path, mode="r")
    try:
        n = st.end_row("online")
        assert st.num_steps("online") == n and st.head_row("online") == 0
        rows = st.read_rows("online", 0, n, list(HASHED))
        hs = collections.Counter(
            hashlib.sha1(b"".join(np.ascontiguousarray(rows[k][i]).tobytes() for k in HASHED)).hexdigest()
            for i in range(n))
        return hs, n
    finally:
        st.close()


def test_three_actors_one_learner_kill9_both_sides_exactly_once(tmp_path: Path) -> None:
    from roborl.store.store import ReplayStore

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    port = free_port()
    L = tmp_path / "learner"
    # The learner's budget is the sum of the actors' steps.
    learner = _train(cfg, L, "learner", port, f"train.total_steps={3 * STEPS}")
    actors = {aid: _actor(cfg, tmp_path, aid, aid, seed, port) for seed, aid in enumerate(["a0", "a1", "a2"], 1)}
    # Same identity as a1, its own run dir: whichever of the two connects second is refused.
    dup = _actor(cfg, tmp_path, "a1_dup", "a1", 9, port)
    procs = [learner, dup, *actors.values()]
    try:
        _wait_for(lambda: _ckpt_step(L) >= 0, 120, "the learner's first checkpoint")
        assert actors["a0"].poll() is None, "a0 finished before it could be killed"
        actors["a0"].kill()  # SIGKILL mid-run; its store's WAL is left open
        actors["a0"].wait(timeout=30)
        actors["a0"] = _actor(cfg, tmp_path, "a0", "a0", 1, port)  # restarted: takes over its identity at once
        procs.append(actors["a0"])
        first = _ckpt_step(L)
        _wait_for(lambda: _ckpt_step(L) > first, 120, "a later learner checkpoint")
        learner.kill()
        learner.wait(timeout=30)
        time.sleep(1.0)  # the actors keep acting meanwhile
        learner = _train(cfg, L, "learner", port, f"train.total_steps={3 * STEPS}")
        procs.append(learner)
        outs = {aid: p.communicate(timeout=240) for aid, p in actors.items()}
        d_out, d_err = dup.communicate(timeout=60)
        l_out, l_err = learner.communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # Exactly one of the two processes presenting "a1" was refused, with one line, exit 2.
    refused = [(r, e) for r, e in ((dup.returncode, d_err), (actors["a1"].returncode, outs["a1"][1])) if r == 2]
    assert len(refused) == 1, (dup.returncode, d_err[-800:], actors["a1"].returncode, outs["a1"][1][-800:])
    err_lines = [ln for ln in refused[0][1].strip().splitlines() if ln.startswith("roborl: error")]
    assert len(err_lines) == 1 and "already connected" in err_lines[0] and "Traceback" not in refused[0][1]
    a1_dir = tmp_path / ("a1" if dup.returncode == 2 else "a1_dup")
    if dup.returncode != 2:
        outs["a1"] = (d_out, d_err)
    assert learner.returncode == 0, l_err[-3000:]
    for aid, (out, err) in outs.items():
        assert "Traceback" not in err, err[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["unacked"] == 0, (aid, err[-2000:])
        assert summary["env_steps"] == STEPS, (aid, summary)
        assert summary["weights_version"] >= 1, (aid, summary)  # weights reached every actor
    assert "resumed from step" in l_err
    assert json.loads(outs["a0"][0].strip().splitlines()[-1])["env_steps"] == STEPS

    # The learner's rows are exactly the union of the actors' stored (acknowledged) rows.
    dirs = {"a0": tmp_path / "a0", "a1": a1_dir, "a2": tmp_path / "a2"}
    union: collections.Counter = collections.Counter()
    steps = {}
    for aid, d in dirs.items():
        hs, n = _row_hashes(d / "store")
        union += hs
        steps[aid] = n
        assert n == STEPS  # real steps of this actor (its restart continued its store)
    a2 = ReplayStore.open(tmp_path / "a2" / "store", mode="r")
    assert sorted(a2.streams()) == ["env0", "env1", "env2"] and sum(a2.streams().values()) == STEPS
    a2.close()
    lh, ln = _row_hashes(L / "store")
    assert max(lh.values()) == 1, "a row is stored twice"
    assert lh == union and ln == sum(steps.values())
    summary = json.loads(l_out.strip().splitlines()[-1])
    assert summary["env_steps"] == 3 * STEPS == ln
    assert summary["actors"] == steps
    st = ReplayStore.open(L / "store", mode="r")
    assert st.streams() == steps
    st.close()
    rows = [json.loads(x) for x in (L / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = rows[-1]
    for aid in steps:  # metrics split by actor
        assert last[f"actor/{aid}/stored"] == STEPS
        assert {f"actor/{aid}/success_rate", f"actor/{aid}/intervention_rate"} <= set(last)
