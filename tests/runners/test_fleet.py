"""Several actors into one learner, real processes on 127.0.0.1: kill -9 an actor and the learner
mid-run and restart them; every actor's rows are stored exactly once (content hashes), the
learner's step count is the sum of the actors' real steps, and a second live process presenting
an identity already connected is refused with one line. One actor steps a vector of sims.

The kill -9 run takes 1-1.5 min on a loaded 2-core machine (process start-ups): ``-m slow``; the short
run and the in-process sink and identity tests stay in the default selection."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

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


def _spaces():
    import gymnasium as gym

    return (gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1.0, 1.0, (1,), np.float32))


def _actor_rows(k: int, ends: dict[int, str], tag: float) -> dict[str, np.ndarray]:
    """k stream rows of one actor: obs[t] = (tag, t, 0), next_obs chained; ``ends`` {row: 'term'|'trunc'|'cut'}
    ends an episode after that row ('cut': interrupted, the next row has first=True)."""
    obs = np.stack([np.array([tag, t, 0.0], np.float32) for t in range(k + 1)])
    first = np.zeros(k, bool)
    first[0] = True
    term, trunc = np.zeros(k, bool), np.zeros(k, bool)
    for r, how in ends.items():
        if how == "term":
            term[r] = True
        elif how == "trunc":
            trunc[r] = True
        if r + 1 < k:
            first[r + 1] = True
    return {"obs": obs[:-1], "next_obs": obs[1:], "action": np.full((k, 1), tag / 10, np.float32),
            "executed_action": np.full((k, 1), tag / 10, np.float32), "reward": np.arange(k, dtype=np.float32),
            "terminated": term, "truncated": trunc, "is_success": np.arange(k) % 9 == 0, "first": first,
            "intervention": np.arange(k) % 4 == 0}


def _cut(a: dict[str, np.ndarray], i: int, j: int) -> dict[str, np.ndarray]:
    return {k: v[i:j] for k, v in a.items()}


def test_sink_stores_each_actor_once_whatever_is_resent(tmp_path: Path) -> None:
    """Overlapping resends, gaps and interleaved actors: every actor's rows are stored exactly once,
    each episode whole; the ack is the actor's rows in ended episodes."""
    from roborl.runners.distributed import TransitionSink
    from roborl.store.store import ReplayStore

    obs_space, act_space = _spaces()
    st = ReplayStore.create(tmp_path / "s", env_id="x", observation_space=obs_space, action_space=act_space,
                            chunk_rows=16)
    sink = TransitionSink(st)
    x = _actor_rows(50, {19: "term", 34: "cut"}, 1.0)   # episodes [0,20) [20,35) [35,50: open)
    y = _actor_rows(30, {9: "trunc"}, 2.0)              # episodes [0,10) [10,30: open)
    assert sink.ingest("x", 0, _cut(x, 0, 30)) == (20, 30)      # ack: the ended episode only
    assert sink.ingest("y", 0, _cut(y, 0, 12)) == (10, 12)
    assert sink.ingest("x", 10, _cut(x, 10, 40)) == (35, 10)    # overlap resent: only [30, 40) added
    assert sink.ingest("x", 45, _cut(x, 45, 50)) == (35, 0)     # a gap: nothing, the actor resends
    assert sink.next_seq("x") == 40
    assert sink.ingest("y", 12, _cut(y, 12, 30), 30) == (30, 18)  # ended_upto: y's last episode ends
    assert sink.ingest("x", 40, _cut(x, 40, 50), 50) == (50, 10)
    assert sink.ingest("x", 0, _cut(x, 0, 50), 50) == (50, 0)   # everything again: nothing added
    bad = dict(_cut(x, 0, 5), obs=np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):  # refused whole, before any row is written
        sink.ingest("z", 0, bad)
    assert sink.next_seq("z") == 0
    assert st.streams() == {"x": 50, "y": 30} and sink.total() == 80 and not st.open_streams()
    rows = st.read_rows("online", 0, 80, ["obs", "next_obs", "terminated", "truncated"])
    got = sorted((float(o[0]), int(o[1])) for o in rows["obs"])
    assert got == sorted([(1.0, t) for t in range(50)] + [(2.0, t) for t in range(30)])
    np.testing.assert_array_equal(rows["next_obs"][:, 1], rows["obs"][:, 1] + 1)
    assert [int(n) for _, n, _ in st.episodes("online")] == [20, 10, 15, 20, 15]
    assert sink.stats["x"].episodes == 3 and sink.stats["x"].interventions == int((np.arange(50) % 4 == 0).sum())
    st.close()


def test_sink_carries_label_fields_and_fills_missing_ones_as_unrecorded(tmp_path: Path) -> None:
    """A learner store with the reward classifier's fields: an actor's pushed labels, probabilities and
    behaviour log-probs are stored as sent; a push without them stores "not recorded" (label -1,
    probability NaN), never 0, which would read as an operator's failure label."""
    from roborl.reward.wrapper import STORE_FIELDS
    from roborl.runners.distributed import TransitionSink
    from roborl.store.store import ReplayStore

    obs_space, act_space = _spaces()
    st = ReplayStore.create(tmp_path / "s", env_id="x", observation_space=obs_space, action_space=act_space,
                            extra_fields=dict(STORE_FIELDS))
    sink = TransitionSink(st)
    x = _actor_rows(10, {9: "term"}, 1.0)
    x.update(operator_label=np.where(np.arange(10) == 9, 1, -1).astype(np.int8),
             classifier_prob=np.linspace(0, 1, 10, dtype=np.float32), log_prob=np.full(10, -1.5, np.float32))
    y = _actor_rows(10, {9: "term"}, 2.0)  # an actor without a classifier
    assert sink.ingest("x", 0, x) == (10, 10)
    assert sink.ingest("y", 0, y) == (10, 10)
    rows = st.read_rows("online", 0, 20, ["obs", "operator_label", "classifier_prob", "log_prob"])
    mine = rows["obs"][:, 0] == 1.0
    np.testing.assert_array_equal(rows["operator_label"][mine], x["operator_label"])
    np.testing.assert_allclose(rows["classifier_prob"][mine], x["classifier_prob"])
    np.testing.assert_allclose(rows["log_prob"][mine], -1.5)
    assert (rows["operator_label"][~mine] == -1).all()
    assert np.isnan(rows["classifier_prob"][~mine]).all() and np.isnan(rows["log_prob"][~mine]).all()
    st.close()


def test_a_one_actor_learner_run_dir_resumes_its_actor_where_it_was(tmp_path: Path) -> None:
    """Rows the one-actor learner stored (default episodes from actor_stream.json's base on) count
    for that actor: its resend adds only what is new."""
    from roborl.runners.distributed import TransitionSink, legacy_offsets
    from roborl.store.store import ReplayStore

    obs_space, act_space = _spaces()
    st = ReplayStore.create(tmp_path / "s", env_id="x", observation_space=obs_space, action_space=act_space)
    rows = _actor_rows(30, {9: "term"}, 1.0)
    st.start_episode(rows["obs"][0])
    for i in range(20):  # what the one-actor learner wrote: [0, 10) ended, [10, 20) open at its kill
        st.add_step(action=rows["action"][i], reward=float(rows["reward"][i]), next_obs=rows["next_obs"][i],
                    terminated=bool(rows["terminated"][i]), truncated=False)
        if rows["terminated"][i]:
            st.start_episode(rows["next_obs"][i])
    st.end_episode()
    (tmp_path / "actor_stream.json").write_text(json.dumps({"actor_id": "old", "base": 0}))
    offs = legacy_offsets(st, tmp_path / "actor_stream.json")
    assert offs == {"old": 20} and legacy_offsets(st, tmp_path / "actor_stream.json") == offs
    sink = TransitionSink(st, offs)
    assert sink.next_seq("old") == 20 and sink.total() == 20
    assert sink.ingest("old", 0, rows, 30) == (30, 10)
    assert st.end_row("online") == 30 and st.streams() == {"old": 10} and sink.total() == 30
    st.close()


def test_duplicate_identity_is_refused_and_a_restart_takes_over(tmp_path: Path) -> None:
    """Real sockets on 127.0.0.1: one session per process; another live session presenting the same
    id is refused, the restarted process (prev_session) and a session after the old one went quiet
    or said goodbye take over."""
    from roborl.robots.transport import Channel, RemoteError
    from roborl.runners.distributed import LearnerEndpoint, TransitionSink
    from roborl.store.store import ReplayStore

    obs_space, act_space = _spaces()
    st = ReplayStore.create(tmp_path / "s", env_id="x", observation_space=obs_space, action_space=act_space)
    port = free_port()
    ep = LearnerEndpoint(TransitionSink(st), "127.0.0.1", port, None, actor_timeout_s=1.0)
    stop = threading.Event()
    th = threading.Thread(target=lambda: [ep.poll(20) for _ in iter(stop.is_set, True)], daemon=True)
    th.start()
    chans = [Channel("127.0.0.1", port, timeout_s=5.0, name="learner") for _ in range(4)]
    try:
        def hello(ch: Channel, prev: str | None = None) -> int:
            return int(ch.call("hello_actor", {"actor_id": "a", "prev_session": prev}).header["next_seq"])

        assert hello(chans[0]) == 0
        with pytest.raises(RemoteError, match="already connected") as e:
            hello(chans[1])
        assert e.value.code == "duplicate_actor"
        assert hello(chans[2], prev=chans[0].session) == 0  # the restarted process of the same run dir
        with pytest.raises(RemoteError, match="already connected"):  # the old session is now the stranger
            chans[0].call("push", {"actor_id": "a", "first_seq": 0}, _cut(_actor_rows(3, {}, 1.0), 0, 3))
        time.sleep(1.3)  # past actor_timeout_s: chans[2] went quiet
        assert hello(chans[1]) == 0
        chans[1].call("bye", {"actor_id": "a"})
        assert hello(chans[3]) == 0  # after a goodbye, at once
        assert ep.counts["refused_duplicate"] == 2
    finally:
        stop.set()
        th.join(timeout=5)
        for ch in chans:
            ch.close()
        ep.close()
        st.close()


def test_two_actors_one_learner_exactly_once(tmp_path: Path) -> None:
    """The short end-to-end run (no kills): one plain actor and one stepping 2 sims."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG.replace(f"total_steps: {STEPS}", "total_steps: 200"))
    port = free_port()
    L = tmp_path / "learner"
    learner = _train(cfg, L, "learner", port, "train.total_steps=400")
    actors = [_train(cfg, tmp_path / "b0", "actor", port, "run.seed=1", "--actor-id", "b0"),
              _train(cfg, tmp_path / "b1", "actor", port, "run.seed=2", "--actor-id", "b1", "distributed.num_envs=2")]
    try:
        outs = [a.communicate(timeout=240) for a in actors]
        l_out, l_err = learner.communicate(timeout=120)
    finally:
        for p in [learner, *actors]:
            if p.poll() is None:
                p.kill()
    assert learner.returncode == 0, l_err[-3000:]
    for a, (out, err) in zip(actors, outs):
        assert a.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["unacked"] == 0
    union = collections.Counter()
    for d in ("b0", "b1"):
        hs, n = _row_hashes(tmp_path / d / "store")
        assert n == 200
        union += hs
    lh, ln = _row_hashes(L / "store")
    assert lh == union and ln == 400 and max(lh.values()) == 1
    summary = json.loads(l_out.strip().splitlines()[-1])
    assert summary["env_steps"] == 400 and summary["actors"] == {"b0": 200, "b1": 200}


@pytest.mark.slow
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
