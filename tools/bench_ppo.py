"""PPO benchmarks (issue 5); prints one JSON object.

1. Throughput (default): env-steps/s *including updates* of roborl PPO and stable-baselines3
   PPO, side by side in one process, interleaved in rounds so both see the same machine load
   (this box is shared). Same settings on both sides: HalfCheetah-v5, 8 sync envs, 256 steps
   per env per iteration (SB3's n_steps; 2048 per iteration), 10 epochs, minibatch 64,
   64x64 tanh MLPs, lr 3e-4, clip 0.2, GAE 0.95, grad clip 0.5. Reports wall-clock fps and
   CPU-time fps (steps per second of this process's CPU time, robust to other users' load),
   and roborl's split of time into simulation, inference and update.
   Torch threads: roborl runs with its shipped setting (``ppo.torch_threads: 1``); SB3 is
   measured both with torch's default thread count (as shipped) and with 1 thread.

2. Robustness (``--robustness``): trains DR and no-DR PPO on HalfCheetah-v5 with the same
   budget for several seeds (configs/ppo_halfcheetah{,_dr}.yaml) and evaluates both on the
   held-out grid (configs/perturb_grid.yaml) with roborl.eval.perturb.

    python tools/bench_ppo.py                      # throughput, ~2-3 min
    python tools/bench_ppo.py --rounds 5 --iters 4
    python tools/bench_ppo.py --robustness --steps 300000 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ours(env_id: str, n_envs: int, n_steps: int, epochs: int, mb: int, seed: int):
    from roborl import config as C
    from roborl.runners.config import RunConfig
    from roborl.runners.ppo import PPOTrainer

    cfg = C.build(RunConfig, {"device": "cpu", "run": {"seed": seed}, "env": {"id": env_id}, "train": {"algo": "ppo"},
                              "ppo": {"n_envs": n_envs, "rollout_steps": n_steps, "epochs": epochs,
                                      "minibatch_size": mb, "torch_threads": 1}})
    return PPOTrainer(cfg, "cpu")


def _sb3(env_id: str, n_envs: int, n_steps: int, epochs: int, mb: int, seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)  # DummyVecEnv: sync, like ours
    return PPO("MlpPolicy", env, n_steps=n_steps, batch_size=mb, n_epochs=epochs, learning_rate=3e-4,
               device="cpu", seed=seed, verbose=0)


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def throughput(args: argparse.Namespace) -> dict:
    default_threads = torch.get_num_threads()
    batch = args.n_envs * args.n_steps
    steps = args.iters * batch
    torch.set_num_threads(1)
    ours = _ours(args.env, args.n_envs, args.n_steps, args.epochs, args.minibatch, 0)
    ours.iterate()  # warm-up (allocations, first normalizer update)
    sb3 = _sb3(args.env, args.n_envs, args.n_steps, args.epochs, args.minibatch, 0)
    torch.set_num_threads(default_threads)
    sb3.learn(batch)  # warm-up
    rows: dict[str, list[tuple[float, float]]] = {"roborl": [], "sb3": [], "sb3_1thread": []}
    timers0 = ours.timers.as_dict()
    for _ in range(args.rounds):
        torch.set_num_threads(1)

        def run_ours() -> None:
            for _ in range(args.iters):
                ours.iterate()
        rows["roborl"].append(_timed(run_ours))
        torch.set_num_threads(default_threads)
        rows["sb3"].append(_timed(lambda: sb3.learn(steps, reset_num_timesteps=False)))
        torch.set_num_threads(1)
        rows["sb3_1thread"].append(_timed(lambda: sb3.learn(steps, reset_num_timesteps=False)))
    torch.set_num_threads(default_threads)
    t = {k: v - timers0[k] for k, v in ours.timers.as_dict().items()}
    tot = sum(t.values())
    ours.close()
    sb3.get_env().close()

    def fps(side: str, i: int) -> list[float]:
        return [steps / r[i] for r in rows[side]]

    out: dict = {"bench": "ppo_throughput", "env": args.env, "n_envs": args.n_envs, "n_steps_per_env": args.n_steps,
                 "steps_per_iteration": batch, "epochs": args.epochs, "minibatch": args.minibatch,
                 "rounds": args.rounds, "env_steps_per_round": steps, "torch_default_threads": default_threads,
                 "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    for side in rows:
        out[f"{side}_fps_wall"] = [round(x, 1) for x in fps(side, 0)]
        out[f"{side}_fps_cpu"] = [round(x, 1) for x in fps(side, 1)]
        out[f"{side}_fps_wall_median"] = round(statistics.median(fps(side, 0)), 1)
        out[f"{side}_fps_cpu_median"] = round(statistics.median(fps(side, 1)), 1)
    for base in ("sb3", "sb3_1thread"):
        # Per-round ratios: both sides of a round ran back to back under the same load.
        out[f"speedup_vs_{base}_wall"] = round(statistics.median(
            [a / b for a, b in zip(fps("roborl", 0), fps(base, 0))]), 2)
        out[f"speedup_vs_{base}_cpu"] = round(statistics.median(
            [a / b for a, b in zip(fps("roborl", 1), fps(base, 1))]), 2)
    out["roborl_time_share"] = {k: round(v / tot, 3) for k, v in t.items() if k != "other"}
    return out


def robustness(args: argparse.Namespace) -> dict:
    from roborl import config as C
    from roborl.checkpoint import load_checkpoint
    from roborl.eval.perturb import evaluate_grid, grid_summary
    from roborl.learners.ppo import policy_from_checkpoint
    from roborl.runners.config import RunConfig
    from roborl.runners.ppo import run

    results: dict = {"bench": "ppo_robustness", "env": "HalfCheetah-v5", "steps": args.steps, "seeds": args.seeds,
                     "grid": "configs/perturb_grid.yaml", "episodes_per_point": args.episodes, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, path in (("no_dr", "configs/ppo_halfcheetah.yaml"), ("dr", "configs/ppo_halfcheetah_dr.yaml")):
            for seed in range(args.seeds):
                run_dir = Path(tmp) / f"{variant}_{seed}"
                cfg = C.load(RunConfig, ROOT / path, [f"train.total_steps={args.steps}", f"run.seed={seed}",
                                                      "train.eval_every=0", f"train.checkpoint_every={args.steps}",
                                                      f"run.dir={run_dir}", "device=cpu"])
                os.environ["ROBORL_QUIET"] = "1"
                t0 = time.time()
                run(cfg, run_dir, "local", None)
                state, meta, _ = load_checkpoint(run_dir)
                policy = policy_from_checkpoint(state, meta, "cpu")
                nominal_cfg = cfg.env
                entries = evaluate_grid(policy, nominal_cfg, ROOT / "configs/perturb_grid.yaml", args.episodes, 1000)
                from roborl.eval.episodes import run_episodes

                nominal = run_episodes(policy, nominal_cfg, args.episodes, 1000).to_json()
                summ = grid_summary(entries, nominal)
                summ["return_retained"] = (summ["return_mean"] / nominal["return_mean"]
                                           if nominal["return_mean"] and nominal["return_mean"] > 0 else None)
                results["runs"].append({"variant": variant, "seed": seed, "train_s": round(time.time() - t0, 1),
                                        **summ})
    for variant in ("no_dr", "dr"):
        rs = [r for r in results["runs"] if r["variant"] == variant]
        results[variant] = {k: float(np.mean([r[k] for r in rs if r[k] is not None]))
                            for k in ("return_nominal", "return_mean", "return_worst", "return_retained")
                            if any(r[k] is not None for r in rs)}
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=256, help="steps per env per iteration (SB3 n_steps)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--minibatch", type=int, default=64)
    p.add_argument("--iters", type=int, default=3, help="PPO iterations per side per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--robustness", action="store_true", help="run the DR vs no-DR held-out-grid comparison instead")
    p.add_argument("--steps", type=int, default=300_000, help="training budget per run (--robustness)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--episodes", type=int, default=2, help="episodes per grid point (--robustness)")
    args = p.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    out = robustness(args) if args.robustness else throughput(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
