"""PPO benchmarks; prints one JSON object.

1. Throughput (default): env-steps/s *including updates* of roborl PPO and stable-baselines3
   PPO, side by side in one process, interleaved in rounds so both see the same machine load
   (this box is shared). Same settings on both sides: HalfCheetah-v5, 8 sync envs, 256 steps
   per env per iteration (SB3's n_steps; 2048 per iteration), 10 epochs, minibatch 64,
   64x64 tanh MLPs, lr 3e-4, clip 0.2, GAE 0.95, grad clip 0.5. Reports wall-clock fps and
   CPU-time fps (steps per second of this process's CPU time, robust to other users' load),
   and roborl's split of time into simulation, inference and update.
   Torch threads: roborl runs with its shipped setting (``ppo.torch_threads: 1``); SB3 is
   measured both with torch's default thread count (as shipped) and with 1 thread.

2. Robustness (``--robustness``): trains DR and no-DR PPO with the same budget for several
   seeds (``roborl train``, one run at a time; default configs/ppo_reach{,_dr}.yaml) and
   evaluates each with ``roborl eval RUN --perturb GRID --json`` on the same episode seeds.
   Reports per run and per variant: nominal / grid-mean / grid-worst return and success, the
   success kept (grid mean / nominal) and the return kept as a normalized score
   ``(R - R0) / (R_nominal - R0)`` with R0 the zero-action policy's nominal return (a plain
   ratio is meaningless for Reach's negative returns), and the mean return per axis value (per
   run, and averaged over the seeds in the summary). With ``--runs-dir`` finished runs and cached
   evals are reused; a reused run must have been trained with the given config's env/ppo
   sections, budget and seed (checked against its config.yaml), else the bench stops.

    python tools/bench_ppo.py                      # throughput, ~2-3 min
    python tools/bench_ppo.py --rounds 5 --iters 4
    python tools/bench_ppo.py --rounds 3 --iters 2 --sb3-one-thread-only   # skip SB3 at torch's default threads
    python tools/bench_ppo.py --wrapper-overhead [--safety-clips]           # us per env step of the wrapper stack
    python tools/bench_ppo.py --robustness --steps 20480 --seeds 3 \
        --grid configs/perturb_grid.yaml configs/perturb_grid_reach.yaml --runs-dir runs/bench_robustness
    python tools/bench_ppo.py --robustness --dr-config configs/ppo_halfcheetah_dr.yaml \
        --nodr-config configs/ppo_halfcheetah.yaml --steps 500000 --episodes 3 --runs-dir /tmp/rob/hist
    python tools/bench_ppo.py --robustness --dr-config configs/ppo_halfcheetah_dr.yaml \
        --nodr-config configs/ppo_halfcheetah.yaml --steps 500000 --seed-list 3 4 0 1 2 --episodes 5 --runs-dir DIR
    python tools/bench_ppo.py --robustness --dr-config configs/ppo_halfcheetah_dr.yaml \
        --nodr-config configs/ppo_halfcheetah.yaml --steps 1000000 --seed-list 0 1 2 3 4 5 6 7 8 9 --episodes 5 --runs-dir DIR
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


def _ours(env_id: str, n_envs: int, n_steps: int, epochs: int, mb: int, seed: int, compile: str = "on",
          vector: str = "sync"):
    from roborl import config as C
    from roborl.runners.config import RunConfig
    from roborl.runners.on_policy import OnPolicyTrainer

    cfg = C.build(RunConfig, {"device": "cpu", "run": {"seed": seed}, "env": {"id": env_id}, "train": {"algo": "ppo"},
                              "ppo": {"n_envs": n_envs, "rollout_steps": n_steps, "epochs": epochs,
                                      "minibatch_size": mb, "torch_threads": 1, "compile": compile,
                                      "vector": vector}})
    return OnPolicyTrainer(cfg, "cpu")


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
    ours = _ours(args.env, args.n_envs, args.n_steps, args.epochs, args.minibatch, 0, vector=args.vector)
    t_c = time.perf_counter()
    ours.iterate()  # warm-up (allocations, first normalizer update; compiles the fast path's step)
    first_iter_s = time.perf_counter() - t_c
    step = getattr(ours.learner, "_fast_step", None)
    plain = _ours(args.env, args.n_envs, args.n_steps, args.epochs, args.minibatch, 0, compile="off",
                  vector=args.vector) if not args.no_plain else None
    if plain is not None:
        plain.iterate()
    sb3 = _sb3(args.env, args.n_envs, args.n_steps, args.epochs, args.minibatch, 0)
    torch.set_num_threads(default_threads)
    sb3.learn(batch)  # warm-up
    rows: dict[str, list[tuple[float, float]]] = {"roborl": [], "roborl_plain": [], "sb3": [], "sb3_1thread": []}
    if plain is None:
        del rows["roborl_plain"]
    if args.sb3_one_thread_only:  # skip SB3 with torch's default threads (collapses on a loaded 2-core box)
        del rows["sb3"]
    timers0 = ours.timers.as_dict()
    for _ in range(args.rounds):
        torch.set_num_threads(1)

        def run_ours() -> None:
            for _ in range(args.iters):
                ours.iterate()
        rows["roborl"].append(_timed(run_ours))
        if plain is not None:
            def run_plain() -> None:
                for _ in range(args.iters):
                    plain.iterate()
            rows["roborl_plain"].append(_timed(run_plain))
        if "sb3" in rows:
            torch.set_num_threads(default_threads)
            rows["sb3"].append(_timed(lambda: sb3.learn(steps, reset_num_timesteps=False)))
        torch.set_num_threads(1)
        rows["sb3_1thread"].append(_timed(lambda: sb3.learn(steps, reset_num_timesteps=False)))
    torch.set_num_threads(default_threads)
    t = {k: v - timers0[k] for k, v in ours.timers.as_dict().items()}
    tot = sum(t.values())
    ours.close()
    if plain is not None:
        plain.close()
    sb3.get_env().close()

    def fps(side: str, i: int) -> list[float]:
        return [steps / r[i] for r in rows[side]]

    out: dict = {"bench": "ppo_throughput", "env": args.env, "n_envs": args.n_envs, "n_steps_per_env": args.n_steps,
                 "steps_per_iteration": batch, "epochs": args.epochs, "minibatch": args.minibatch,
                 "rounds": args.rounds, "env_steps_per_round": steps, "torch_default_threads": default_threads,
                 "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "vector": args.vector,
                 "compiled": bool(step is not None and step.active),
                 "compile_s": None if step is None or step.compile_s is None else round(step.compile_s, 1),
                 "first_iteration_s": round(first_iter_s, 1)}
    for side in rows:
        out[f"{side}_fps_wall"] = [round(x, 1) for x in fps(side, 0)]
        out[f"{side}_fps_cpu"] = [round(x, 1) for x in fps(side, 1)]
        out[f"{side}_fps_wall_median"] = round(statistics.median(fps(side, 0)), 1)
        out[f"{side}_fps_cpu_median"] = round(statistics.median(fps(side, 1)), 1)
    for base in [b for b in ("sb3", "sb3_1thread", "roborl_plain") if b in rows]:
        # Per-round ratios: both sides of a round ran back to back under the same load.
        out[f"speedup_vs_{base}_wall"] = round(statistics.median(
            [a / b for a, b in zip(fps("roborl", 0), fps(base, 0))]), 2)
        out[f"speedup_vs_{base}_cpu"] = round(statistics.median(
            [a / b for a, b in zip(fps("roborl", 1), fps(base, 1))]), 2)
    if plain is not None:
        out["speedup_plain_vs_sb3_1thread_wall"] = round(statistics.median(
            [a / b for a, b in zip(fps("roborl_plain", 0), fps("sb3_1thread", 0))]), 2)
    out["roborl_time_share"] = {k: round(v / tot, 3) for k, v in t.items() if k != "other"}
    if args.sim_limit:
        out["sim_only_env_steps_per_s"] = {v: round(_sim_only(args, v, steps), 1) for v in ("sync", "async")}
    return out


def _sim_only(args: argparse.Namespace, vector: str, steps: int) -> float:
    """The raw-simulation limit: env-steps/s of the same vector env (roborl's env stack, same envs and
    autoreset) stepped with random actions, no inference, no update."""
    from roborl import config as C
    from roborl.envs.success import SUCCESS_KEYS
    from roborl.runners.config import RunConfig
    from roborl.runners.on_policy import make_vec_env

    cfg = C.build(RunConfig, {"env": {"id": args.env}})
    envs = make_vec_env(cfg.env, args.n_envs, 0, vector, SUCCESS_KEYS)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (64, args.n_envs, envs.single_action_space.shape[0])).astype(np.float32)
    n = max(1, steps // args.n_envs)
    t = time.perf_counter()
    for i in range(n):
        envs.step(acts[i % 64])
    rate = n * args.n_envs / (time.perf_counter() - t)
    envs.close()
    return rate


def wrapper_overhead(args: argparse.Namespace) -> dict:
    """CPU time per env step of roborl's wrapper stack alone (``--wrapper-overhead``): the stack the
    on-policy runner builds (info filter, RescaleAction, SafetyLayer, gymnasium's TimeLimit /
    OrderEnforcing / PassiveEnvChecker) around a stub env that returns fixed arrays, so the
    simulation's noise does not drown the microseconds. Reports the stack minus the bare stub,
    min over repeats, ``reference`` (every wrapper builds its info entries) and, where this roborl
    has it, ``lean`` (the runner's default: entries the filter drops are not built).
    ``--safety-clips``: safety bounds [-0.4, 0.3] so the safety layer clips (nearly) every action."""
    import inspect

    import gymnasium as gym
    from roborl import config as C
    from roborl.envs.success import SUCCESS_KEYS
    from roborl.runners import on_policy as OP
    from roborl.runners.config import RunConfig

    class Stub(gym.Env):
        def __init__(self) -> None:
            self.action_space = gym.spaces.Box(-1, 1, (6,), np.float32)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (17,), np.float64)
            self._o = np.zeros(17)

        def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            return self._o.copy(), {}

        def step(self, a: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:  # HalfCheetah's info keys
            return self._o.copy(), 0.5, False, False, {"x_position": 0.0, "x_velocity": 0.0, "reward_forward": 0.0,
                                                        "reward_ctrl": 0.0}

    gym.register("BenchStub-v0", entry_point=Stub, max_episode_steps=10**9)
    env: dict = {"id": "BenchStub-v0"}
    if args.safety_clips:
        env["safety"] = {"action_low": [-0.4] * 6, "action_high": [0.3] * 6}
    cfg = C.build(RunConfig, {"env": env, "train": {"algo": "ppo"}})
    has_lean = "skip_unread" in inspect.signature(OP._env_fn).parameters
    stacks = {"reference": OP._env_fn(cfg.env, 0, SUCCESS_KEYS, **({"skip_unread": False} if has_lean else {}))}
    if has_lean:
        stacks["lean"] = OP._env_fn(cfg.env, 0, SUCCESS_KEYS, skip_unread=True)
    stacks["stub"] = stacks["reference"].unwrapped
    acts = np.random.default_rng(0).uniform(-1, 1, size=(2000, 6)).astype(np.float32)
    best = dict.fromkeys(stacks, float("inf"))
    for _ in range(15):
        for k, e in stacks.items():
            e.reset(seed=0)
            t = time.process_time()
            for a in acts:
                e.step(a)
            best[k] = min(best[k], (time.process_time() - t) / len(acts) * 1e6)
    return {"bench": "ppo_wrapper_overhead", "safety_clips": bool(args.safety_clips), "load_avg_1m": os.getloadavg()[0],
            "stub_us_per_step": round(best["stub"], 2),
            "wrapper_us_per_step": {k: round(v - best["stub"], 2) for k, v in best.items() if k != "stub"}}


class _HoldPolicy:
    """Zero action in the normalized action space ("do nothing": hold position on our delta-EE
    arm tasks, zero torque on locomotion): the reference point of the normalized score below."""

    def __init__(self, act_dim: int) -> None:
        self.act_dim = act_dim

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.zeros((np.asarray(obs).shape[0], self.act_dim), dtype=np.float32)


def _roborl(*argv: str) -> str:
    """Run ``roborl ARGV`` in a subprocess (exactly the documented command); its stdout."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "roborl.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                       env={"OMP_NUM_THREADS": "1", **os.environ, "ROBORL_QUIET": "1"})  # 1 torch thread: a shared box
    if r.returncode != 0:
        raise SystemExit(f"roborl {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def _recipe_mismatch(run_dir: Path, config: str, overrides: list[str]) -> str | None:
    """First config key (``section.field``) in which the finished run in ``run_dir`` differs from
    ``config`` + ``overrides`` (env, ppo, train.algo/total_steps and the seed), or None. Reusing a
    run trained with another recipe would silently compare the wrong policies."""
    from roborl import config as C
    from roborl.runners.config import RunConfig

    want = C.to_dict(C.load(RunConfig, config, overrides))
    have = C.to_dict(C.load(RunConfig, run_dir / "config.yaml"))
    for section, keys in (("env", None), ("ppo", None), ("train", ("algo", "total_steps")), ("run", ("seed",))):
        for k in keys or want[section]:
            if want[section][k] != have[section][k]:
                return f"{section}.{k}: run has {have[section][k]!r}, {config} gives {want[section][k]!r}"
    return None


def _kept(x: float | None, nominal: float | None, ref: float | None) -> float | None:
    """Normalized score kept: ``(x - ref) / (nominal - ref)``, 1 = nominal performance, 0 = the
    zero-action policy. A plain ratio ``x / nominal`` is meaningless for negative returns (Reach)."""
    if x is None or nominal is None or ref is None or nominal - ref <= 0:
        return None
    return (x - ref) / (nominal - ref)


def _by_axis(entries: list[dict]) -> dict[str, dict[str, float]]:
    """Mean return over the grid points sharing one value of an axis: shows which axes matter."""
    out: dict[str, dict[str, float]] = {}
    for k in entries[0]["params"]:
        vals = sorted({e["params"][k] for e in entries})
        if len(vals) > 1:
            out[k] = {f"{v:g}": round(float(np.mean([e["return_mean"] for e in entries if e["params"][k] == v])), 3)
                      for v in vals}
    return out


def robustness(args: argparse.Namespace) -> dict:
    """Train ``--seeds`` DR and no-DR policies with the same budget (``roborl train``, one at a
    time), then evaluate each with ``roborl eval RUN --perturb GRID --json`` on the same episode
    seeds (``--eval-seed``), and summarize per run and per variant."""
    from roborl.checkpoint import find_checkpoint, load_checkpoint
    from roborl.eval.episodes import build_eval_env
    from roborl.eval.load import load_for_eval
    from roborl.eval.episodes import run_episodes

    variants = {"dr": args.dr_config, "no_dr": args.nodr_config}
    seeds = list(args.seed_list) if args.seed_list else list(range(args.seeds))
    keep = args.runs_dir is not None
    tmp = None if keep else tempfile.TemporaryDirectory()
    runs_dir = Path(args.runs_dir if keep else tmp.name)
    results: dict = {"bench": "ppo_robustness", "configs": variants, "steps": args.steps, "seeds": seeds,
                     "grids": args.grid, "episodes_per_point": args.episodes, "eval_seed": args.eval_seed,
                     "cpu_count": os.cpu_count(), "runs": []}
    ref: dict[str, float] | None = None
    try:
        # Seeds outer, variants inner: a run cut short still holds matched DR / no-DR pairs.
        for seed in seeds:
            for variant, config in variants.items():
                run_dir = runs_dir / f"{variant}_{seed}"
                t0 = time.time()
                overrides = [f"train.total_steps={args.steps}", f"run.seed={seed}", f"train.eval_every={args.steps}",
                             f"train.checkpoint_every={args.steps}", f"run.dir={run_dir}", "device=cpu"]
                ck = find_checkpoint(run_dir) if run_dir.exists() else None
                if ck is not None and (why := _recipe_mismatch(run_dir, str(config), overrides)):
                    raise SystemExit(f"{run_dir} was trained with another recipe ({why}); use another --runs-dir")
                if ck is None or load_checkpoint(ck)[2] < args.steps:  # reuse a finished run (--runs-dir)
                    _roborl("train", str(config), *overrides)
                train_s = time.time() - t0
                if ref is None:  # the zero-action reference, on the nominal env and the same seeds
                    _, env_cfg, meta, _, _, _ = load_for_eval(str(run_dir), "cpu")
                    env = build_eval_env(env_cfg, args.eval_seed)
                    r = run_episodes(_HoldPolicy(int(meta["dims"]["act"])), env_cfg, args.episodes, args.eval_seed,
                                     env=env).to_json()
                    env.close()
                    ref = {"return_mean": r["return_mean"], "success_rate": r["success_rate"]}
                    results["zero_action_reference"] = ref
                for grid in args.grid:
                    t1 = time.time()
                    # The eval's JSON is kept next to the run and reused (same grid, episodes and seed).
                    cache = runs_dir / f"{run_dir.name}.{Path(grid).stem}.e{args.episodes}.s{args.eval_seed}.json"
                    if keep and cache.exists():
                        out = json.loads(cache.read_text())
                    else:
                        raw = _roborl("eval", str(run_dir), "--perturb", grid, "--json", "--episodes",
                                      str(args.episodes), "--seed", str(args.eval_seed), "--device", "cpu")
                        out = json.loads(raw)
                        if keep:
                            cache.write_text(raw)
                    s = out["perturb_summary"]
                    results["runs"].append({
                        "variant": variant, "seed": seed, "grid": grid, "train_s": round(train_s, 1),
                        "eval_s": round(time.time() - t1, 1),
                        **{k: s[k] for k in ("return_nominal", "return_mean", "return_worst", "success_nominal",
                                             "success_mean", "success_worst", "success_retained")},
                        "return_kept": _kept(s["return_mean"], s["return_nominal"], ref["return_mean"]),
                        "return_worst_kept": _kept(s["return_worst"], s["return_nominal"], ref["return_mean"]),
                        "return_by_axis": _by_axis(out["perturb"])})
                    # One line per finished evaluation on stderr: a long run shows its results as it goes.
                    print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    keys = ("return_nominal", "return_mean", "return_worst", "return_kept", "return_worst_kept",
            "success_nominal", "success_mean", "success_worst", "success_retained")
    results["summary"] = {}
    for grid in args.grid:
        per: dict = {}
        for variant in variants:
            rs = [r for r in results["runs"] if r["variant"] == variant and r["grid"] == grid]
            per[variant] = {k: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)}
                            for k in keys if (v := [r[k] for r in rs if r[k] is not None])}
        # The targets: the DR policy keeps >= 90% of nominal over the grid; its worst
        # case beats the no-DR worst case (seed means; the margin is in the units of each metric).
        dr, nd = per["dr"], per["no_dr"]
        per["targets"] = {
            "dr_return_kept_ge_0.9": dr.get("return_kept", {}).get("mean", -1) >= 0.9,
            "dr_success_kept_ge_0.9": dr.get("success_retained", {}).get("mean", -1) >= 0.9,
            "worst_return_margin_dr_minus_nodr": round(dr["return_worst"]["mean"] - nd["return_worst"]["mean"], 4),
            "worst_success_margin_dr_minus_nodr": round(dr["success_worst"]["mean"] - nd["success_worst"]["mean"], 4),
        }
        # Mean return per axis value over the seeds: which perturbations cost what.
        for variant in variants:
            axes = [r["return_by_axis"] for r in results["runs"] if r["variant"] == variant and r["grid"] == grid]
            if axes:
                per[variant]["return_by_axis"] = {
                    k: {v: round(float(np.mean([a[k][v] for a in axes])), 1) for v in axes[0][k]} for k in axes[0]}
        results["summary"][grid] = per
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
    p.add_argument("--sb3-one-thread-only", action="store_true",
                   help="measure SB3 with 1 torch thread only (skip torch's default thread count)")
    p.add_argument("--vector", choices=["sync", "async"], default="sync", help="roborl's vector env (ppo.vector)")
    p.add_argument("--no-plain", action="store_true", help="skip roborl with ppo.compile=off (the plain update)")
    p.add_argument("--sim-limit", action="store_true",
                   help="also time the raw simulation alone (random actions through the same vector env)")
    p.add_argument("--robustness", action="store_true", help="run the DR vs no-DR held-out-grid comparison instead")
    p.add_argument("--wrapper-overhead", action="store_true",
                   help="CPU time per env step of the wrapper stack alone, on a stub env (see wrapper_overhead)")
    p.add_argument("--safety-clips", action="store_true", help="--wrapper-overhead with safety bounds that clip")
    p.add_argument("--steps", type=int, default=20_480, help="training budget per run (--robustness)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (--robustness)")
    p.add_argument("--seed-list", type=int, nargs="+", default=None,
                   help="train/evaluate exactly these seeds, in this order (--robustness; overrides --seeds)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per grid point and nominal (--robustness)")
    p.add_argument("--eval-seed", type=int, default=1000, help="base episode seed, the same for every policy (--robustness)")
    p.add_argument("--dr-config", default="configs/ppo_reach_dr.yaml", help="DR run config (--robustness)")
    p.add_argument("--nodr-config", default="configs/ppo_reach.yaml", help="no-DR run config (--robustness)")
    p.add_argument("--grid", nargs="+", default=["configs/perturb_grid.yaml"], help="held-out grid(s) (--robustness)")
    p.add_argument("--runs-dir", default=None, help="keep the trained runs here and reuse finished ones (--robustness; "
                   "default: a temporary directory)")
    args = p.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    out = robustness(args) if args.robustness else wrapper_overhead(args) if args.wrapper_overhead else throughput(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
