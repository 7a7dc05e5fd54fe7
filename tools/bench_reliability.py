"""kill -9 trials on training and on collection; prints one JSON object. Not a CI test.

Each training trial starts a real ``roborl train`` (SAC on Pendulum-v1, small networks), SIGKILLs it
at a random moment before or after its first checkpoint, starts it again on the same run dir to the
end, and checks the resume rule: the run ends at ``train.total_steps``, the store's online rows equal
the steps counted, and ``roborl store verify`` passes. Each collection trial SIGKILLs a real
``roborl collect`` mid-run, runs it again, and checks that the store verifies and that every episode
it committed before the kill is still there.

    python tools/bench_reliability.py --trials 3
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = [sys.executable, "-m", "roborl"]
SMALL = ["env.id=Pendulum-v1", "sac.hidden=[32,32]", "sac.batch_size=32", "sac.warmup_steps=100",
         "store.sampler.demo_fraction=0", "train.eval_episodes=1", "train.eval_every=0", "train.log_every=50",
         "train.total_steps=1200", "train.checkpoint_every=600", "--quiet"]


def _rows(store: Path, partitions: tuple[str, ...] = ("online",)) -> tuple[int, int]:
    """(committed steps, episodes) over ``partitions`` of a store, opened read-only."""
    from roborl.store import ReplayStore

    with ReplayStore.open(store, mode="r") as st:
        return (sum(int(st.num_steps(p)) for p in partitions), sum(int(st.num_episodes(p)) for p in partitions))


def _verify(store: Path) -> bool:
    p = subprocess.run([*PY, "store", "verify", str(store), "--json"], cwd=REPO, capture_output=True, text=True)
    return p.returncode == 0 and json.loads(p.stdout)["ok"]


def train_trial(root: Path, seed: int, before_first_ckpt: bool, rng: random.Random) -> dict:
    run = root / f"train-{seed}-{'pre' if before_first_ckpt else 'post'}"
    args = [*PY, "train", "/dev/null", *SMALL, f"run.dir={run}", f"run.seed={seed}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = run / "checkpoints"
    t0 = time.time()
    armed_at = None  # when the kill condition (store there; first checkpoint written or not yet) held
    delay = rng.uniform(0.0, 1.5)
    while proc.poll() is None and time.time() - t0 < 600:
        has_ckpt = ckpt.exists() and any(ckpt.glob("step_*"))
        # metrics.jsonl appears after the first 50 steps: the store then holds rows to lose.
        ready = (run / "metrics.jsonl").exists() and (has_ckpt != before_first_ckpt)
        if ready and armed_at is None:
            armed_at = time.time()
        if armed_at is not None and time.time() - armed_at >= delay:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    killed_ckpt = ckpt.exists() and any(ckpt.glob("step_*"))
    rows_at_kill = _rows(run / "store")[0] if (run / "store").exists() else 0
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    rows, _ = _rows(run / "store")
    summary = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {}
    said = [ln for ln in p.stdout.splitlines() if "kept as replay data" in ln]
    return {"trial": run.name, "killed_after_first_checkpoint": killed_ckpt, "rows_at_kill": rows_at_kill,
            "rerun_exit": p.returncode, "resume_line": said[0] if said else None,
            "env_steps": summary.get("env_steps"), "store_online_rows": rows,
            "counters_match_store": summary.get("env_steps") == rows, "verify_ok": _verify(run / "store")}


def collect_trial(root: Path, seed: int, rng: random.Random) -> dict:
    store = root / f"collect-{seed}"
    args = [*PY, "collect", "--env", "roborl/Push-v0", "--policy", "scripted", "--store", str(store),
            "--episodes", "400", "--noise", "0.1", "--seed", str(seed)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(2.0, 4.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    both = ("demo", "online")
    before = _rows(store, both) if store.exists() else (0, 0)
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    after = _rows(store, both)
    return {"trial": store.name, "episodes_at_kill": before[1], "rerun_exit": p.returncode,
            "episodes_after": after[1], "kept_all_committed": after[1] >= before[1], "verify_ok": _verify(store)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3, help="Trials of each kind.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "train": [], "collect": []}
    with tempfile.TemporaryDirectory(prefix="roborl-kill-") as tmp:
        root = Path(tmp)
        for i in range(args.trials):
            for pre in (True, False):
                out["train"].append(train_trial(root, args.seed + i, pre, rng))
            out["collect"].append(collect_trial(root, args.seed + i, rng))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
