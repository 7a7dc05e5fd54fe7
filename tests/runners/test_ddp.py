"""Data-parallel PPO on real torch.distributed: 2 gloo processes on 127.0.0.1.

Run as a script (``python test_ddp.py SCENARIO OUT``) this file is also the worker each rank runs:
the launcher variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) come from the test.
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
T, N, O, A = 16, 4, 5, 2  # rollout steps, envs (all ranks together), obs size, action size


def _ppo_cfg(**kw):
    from roborl import config as C
    from roborl.learners.config import PPOConfig

    base = {"hidden": [16, 16], "epochs": 2, "minibatch_size": T * N, "lr": 3e-3, "max_grad_norm": 0.5}
    return C.build(PPOConfig, {**base, **kw})


def _rollout(seed: int, envs: slice = slice(None), adv_scale: float = 1.0):
    """A synthetic rollout [T, N] (drawn for all N envs, then the ``envs`` columns kept)."""
    from roborl.learners.base import Rollout

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    obs = r(T, N, O) * 3 + 1
    mu = r(T, N, A) * 0.1
    u = mu + r(T, N, A)
    from roborl.learners.ppo import gaussian_log_prob

    logp = gaussian_log_prob(u, mu, torch.zeros(A))
    dones = (torch.rand(T, N, generator=g) < 0.1).float()
    ro = Rollout(obs={"policy": obs}, actions=u, logp=logp, mu=mu, values=r(T, N) * 0.1,
                 rewards=r(T, N) * adv_scale, next_values=r(T, N) * 0.1, terminated=dones * 0, dones=dones)
    return Rollout(**{k: ({kk: vv[:, envs] for kk, vv in v.items()} if isinstance(v, dict) else v[:, envs])
                      for k, v in vars(ro).items()})


def _state(ppo) -> dict:
    return {"flat": ppo.flat.detach().clone(), "lr": ppo.lr,
            "rms": {k: v.detach().clone() for k, v in ppo.model.obs_rms.state_dict().items()}}


# ============================================================================= worker (one rank)

def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _shutdown_worker(out: str) -> None:
    """D.init, one PPO update, a late import of torch.distributed.nn, D.shutdown: threads before and after."""
    import torch.distributed as dist

    from roborl.learners.ppo import PPO
    from roborl.runners import dist as D

    torch.set_num_threads(1)
    assert "torch.distributed.nn" not in sys.modules  # the learner imports it lazily, after the group starts
    before = _threads()
    D.init(D.world_from_env(), "cpu")
    ppo = PPO(O, A, _ppo_cfg())
    ppo.update(_rollout(1 + dist.get_rank(), slice(0, N // 2)))
    importlib.import_module("torch.distributed.nn")  # as torch does lazily (dynamo, export) mid-run
    during = _threads()
    D.shutdown()
    torch.save({"before": before, "during": during, "after": _threads()}, out)


def _worker(scenario: str, out: str) -> None:
    from roborl.learners.ppo import PPO
    from roborl.runners import dist as D

    if scenario == "shutdown":
        return _shutdown_worker(out)
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # Through the package's init/shutdown (not a bare init_process_group): they make destroy join
    # gloo's threads, without which a rank can abort at interpreter exit.
    D.init(D.world_from_env(), "cpu")
    half = slice(rank * N // world, (rank + 1) * N // world)
    res: dict = {}
    if scenario == "identical":
        torch.manual_seed(100 + rank)  # different inits: the learner must broadcast rank 0's
        ppo = PPO(O, A, _ppo_cfg(minibatch_size=16, target_kl=0.01, kl_control="adaptive_lr"))
        res["init"] = ppo.flat.detach().clone()
        for k in range(3):
            torch.manual_seed(1000 * k + rank)  # different minibatch permutations per rank too
            ro = _rollout(10 * k + rank, slice(0, N // world))  # each rank its own data
            res[f"m{k}"] = ppo.update(ro)
            ppo.observe(ro.obs)
    elif scenario == "equiv":
        torch.manual_seed(0)
        ppo = PPO(O, A, _ppo_cfg(minibatch_size=T * N // world))
        ro = _rollout(7, half)
        res["m"] = ppo.update(ro)
        ppo.observe(ro.obs)
    elif scenario == "kl":
        torch.manual_seed(0)
        ppo = PPO(O, A, _ppo_cfg(minibatch_size=8, epochs=4, lr=3e-2, target_kl=0.002, kl_control="early_stop"))
        # Rank 0 sees large advantages, rank 1 small ones: their local KLs differ at every step.
        ro = _rollout(3 + rank, slice(0, N // world), adv_scale=10.0 if rank == 0 else 0.01)
        res["m"] = ppo.update(ro)
    res.update(_state(ppo))
    torch.save(res, out)
    D.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(scenario: str, tmp: Path, world: int = 2) -> list[dict]:
    port = _free_port()
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(HERE), scenario, str(tmp / f"r{r}.pt")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    return [torch.load(tmp / f"r{r}.pt", weights_only=False) for r in range(world)]


# ============================================================================= tests

def test_parameters_bit_identical_across_ranks_after_updates(tmp_path):
    r0, r1 = _run_ranks("identical", tmp_path)
    assert torch.equal(r0["init"], r1["init"])  # rank 0's init was broadcast
    assert not torch.equal(r0["flat"], r0["init"])  # it trained
    assert torch.equal(r0["flat"], r1["flat"])  # bit-identical after 3 updates on different data
    for k in r0["rms"]:
        assert torch.equal(r0["rms"][k], r1["rms"][k]), k
    assert r0["lr"] == r1["lr"]
    for k in range(3):
        assert r0[f"m{k}"]["grad_steps"] == r1[f"m{k}"]["grad_steps"]
    # The adaptive lr moved at least once (the KL decisions were exercised).
    assert any(r0[f"m{k}"]["lr"] != 3e-3 for k in range(3))


def test_two_half_batches_match_one_full_batch_in_one_process(tmp_path):
    from roborl.learners.ppo import PPO

    r0, r1 = _run_ranks("equiv", tmp_path)
    torch.manual_seed(0)
    ref = PPO(O, A, _ppo_cfg())
    ro = _rollout(7)
    m = ref.update(ro)
    ref.observe(ro.obs)
    assert m["grad_steps"] == r0["m"]["grad_steps"] == 2
    torch.testing.assert_close(r0["flat"], ref.flat.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(r0["flat"], r1["flat"])
    for k, v in ref.model.obs_rms.state_dict().items():
        torch.testing.assert_close(r0["rms"][k], v, rtol=1e-9, atol=1e-9)
    # Not trivially equal: one rank's half alone gives a different update.
    torch.manual_seed(0)
    solo = PPO(O, A, _ppo_cfg(minibatch_size=T * N // 2))
    solo.update(_rollout(7, slice(0, N // 2)))
    assert (solo.flat.detach() - ref.flat.detach()).abs().max() > 1e-4


def test_kl_early_stop_is_taken_on_the_same_minibatch_by_both_ranks(tmp_path):
    r0, r1 = _run_ranks("kl", tmp_path)
    m0, m1 = r0["m"], r1["m"]
    assert m0["early_stop"] == m1["early_stop"] == 1.0
    total = 4 * (T * N // 2 // 8)
    assert m0["grad_steps"] == m1["grad_steps"] < total
    assert torch.equal(r0["flat"], r1["flat"])


def test_shutdown_joins_the_gloo_threads(tmp_path):
    # A group that outlives destroy_process_group leaves gloo's worker threads running into interpreter
    # finalization, where freeing their last work aborts the rank now and then (SIGABRT).
    for r in _run_ranks("shutdown", tmp_path):
        assert r["during"] > r["before"]  # gloo started its threads
        assert r["after"] == r["before"], r


def _write_cfg(tmp: Path, run_dir: Path, total: int) -> Path:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(f"""run: {{name: ddp, seed: 0, dir: {run_dir}}}
device: cpu
env: {{id: Pendulum-v1}}
train: {{algo: ppo, total_steps: {total}, eval_every: 0, eval_episodes: 1, checkpoint_every: {total}, log_every: 256}}
ppo: {{n_envs: 2, rollout_steps: 64, epochs: 2, minibatch_size: 64, torch_threads: 1, target_kl: 0.02,
      kl_control: adaptive_lr}}
""")
    return cfg


def test_cli_nproc_2_trains_writes_one_checkpoint_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    cfg = _write_cfg(tmp_path, run_dir, 1024)
    cmd = [sys.executable, "-m", "roborl", "train", str(cfg), "--nproc", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    steps = sorted(d.name for d in (run_dir / "checkpoints").iterdir() if d.name.startswith("step_"))
    assert steps == ["step_000001024"]  # rank 0 alone wrote it; 2 ranks x 2 envs x 64 steps = 256 per iteration
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.yaml", "metrics.csv", "metrics.jsonl"]
    assert p.stdout.count("eval return") == 1
    p = subprocess.run(cmd + ["train.total_steps=1536"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("resumed from step 1024") == 1
    steps = sorted(d.name for d in (run_dir / "checkpoints").iterdir() if d.name.startswith("step_"))
    assert steps == ["step_000001024", "step_000001536"]


@pytest.mark.parametrize("extra, culprit", [(["train.algo=sac"], "train.algo=ppo"), (["--nproc", "0"], "--nproc 0")])
def test_bad_nproc_use_is_one_line_exit_2(tmp_path, extra, culprit):
    cfg = _write_cfg(tmp_path, tmp_path / "run", 1024)
    args = ["--nproc", "2", *extra] if extra[0] != "--nproc" else extra
    p = subprocess.run([sys.executable, "-m", "roborl", "train", str(cfg), *args], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and culprit in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d.name))
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"RANK="):
            return int(e[5:])
    return None


def test_a_killed_rank_ends_the_job_with_one_line_and_nonzero_exit(tmp_path):
    run_dir = tmp_path / "run"
    cfg = _write_cfg(tmp_path, run_dir, 10_000_000)
    p = subprocess.Popen([sys.executable, "-m", "roborl", "train", str(cfg), "--nproc", "2", "train.log_every=256"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
            assert p.poll() is None and time.time() < deadline, p.communicate()
            time.sleep(0.2)
        victims = [c for c in _children(p.pid) if _rank_of(c) == 1]
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        out, err = p.communicate(timeout=120)  # no hang
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "rank 1" in lines[0] and "SIGKILL" in lines[0]


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
