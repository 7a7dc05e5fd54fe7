"""Scale-out benchmarks; prints one JSON object.

``--part ppo``: data-parallel PPO env-steps/s at 1 and 2 (or ``--nproc``) processes, side by side
in one run: ``roborl train CONFIG --nproc N`` (torch's elastic launcher, gloo on CPU), the same
per-rank work at every N (``n_envs`` envs x ``rollout_steps`` per rank and iteration, ``--iters``
iterations), rounds interleaved (1, 2, 1, 2, ...) so every N sees the same machine load. The
figure is rank 0's logged ``fps`` of the last row (env steps of all ranks per second of the
training loop, start-up excluded); wall seconds of the whole command (start-up, launch and final
eval included) are reported too. Scaling efficiency = fps(N) / (N * fps(1)).

    python tools/bench_scale.py --part ppo
    python tools/bench_scale.py --part ppo --env HalfCheetah-v5 --n-envs 4 --rollout-steps 256 --iters 4 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ppo_run(nproc: int, args: argparse.Namespace, tmp: Path, tag: str) -> dict[str, float]:
    run_dir = tmp / tag
    per_iter = args.n_envs * args.rollout_steps * nproc
    total = per_iter * args.iters
    cfg = tmp / "cfg.yaml"
    cfg.write_text(f"""run: {{name: scale, seed: 0}}
device: cpu
env: {{id: {args.env}}}
train: {{algo: ppo, total_steps: {total}, eval_every: 0, eval_episodes: 1, checkpoint_every: {10 * total},
        log_every: {total}}}
ppo: {{n_envs: {args.n_envs}, rollout_steps: {args.rollout_steps}, epochs: {args.epochs},
      minibatch_size: {args.minibatch}, hidden: [64, 64], torch_threads: 1}}
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "roborl", "--quiet", "train", str(cfg), f"run.dir={run_dir}",
                        "--nproc", str(nproc)], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench_scale: nproc {nproc} failed: {p.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    fps = [r["fps"] for r in rows if "fps" in r][-1]
    return {"fps": fps, "wall_s": wall, "env_steps": total}


def part_ppo(args: argparse.Namespace) -> dict:
    res: dict[int, list[dict[str, float]]] = {n: [] for n in args.nproc}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(args.rounds):
            for n in args.nproc:
                res[n].append(_ppo_run(n, args, tmp, f"r{r}_n{n}"))
    med = {n: statistics.median(x["fps"] for x in v) for n, v in res.items()}
    base = med[args.nproc[0]] if args.nproc[0] == 1 else None
    return {
        "part": "ppo", "env": args.env, "per_rank": {"n_envs": args.n_envs, "rollout_steps": args.rollout_steps,
                                                    "epochs": args.epochs, "minibatch": args.minibatch,
                                                    "iters": args.iters},
        "cpus": os.cpu_count(), "rounds": args.rounds,
        "results": {str(n): {"env_steps_per_s_median": med[n], "runs": v,
                             **({"speedup": med[n] / base, "scaling_efficiency": med[n] / (n * base)} if base else {})}
                    for n, v in res.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["ppo"], default="ppo")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts (the first should be 1)")
    ap.add_argument("--env", default="HalfCheetah-v5")
    ap.add_argument("--n-envs", type=int, default=4, help="envs per rank")
    ap.add_argument("--rollout-steps", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--minibatch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=4, help="PPO iterations per run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps(part_ppo(args), indent=1))


if __name__ == "__main__":
    main()
