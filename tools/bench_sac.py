"""SAC benchmarks. Prints one JSON object. Not a CI test.

Parts (``--part``):

* ``throughput``: learner updates/s at batch 256 with 256x256 networks on HalfCheetah-v5
  data, side by side in ONE run with stable-baselines3 SAC (same networks, batch, UTD).
  Both sides are measured the same way: fill a replay buffer with random HalfCheetah
  transitions, then time K gradient updates (sampling included). Also the full loop
  (env step + store append + sample + update) env-steps/s at UTD 1, and UTD 20.
* ``ablation``: env steps to reach 90% eval success on the default task, for several
  seeds, with rows: SAC from scratch, BC only, RLPD demo mix, demo mix + residual,
  demo mix + PER/LAP. Each row is one config override set on configs/default.yaml.
* ``halfcheetah``: return after a fixed budget (100k steps) for ours vs SB3 SAC, several seeds.
* ``loop``: full loops only (HalfCheetah UTD 1, and the main job cut short), to run one checkout against
  another with the same tool (``PYTHONPATH`` picks the code).
* ``tasks``: the recipe on every shipped arm task at its budget (Reach 3k, Push 10k, PickPlace 30k,
  PegInsert 30k env steps; configs/sac_<task>.yaml), next to BC alone and the same config without demos;
  each run's final policy on 200 held-out episodes, the final state of failed ones, wall time per run.

Example:
    python tools/bench_sac.py --part throughput --updates 300
    python tools/bench_sac.py --part ablation --seeds 0 1 2 3 4 --steps 20000
    python tools/bench_sac.py --part halfcheetah --seeds 0 1 2 --steps 100000 --eval-episodes 10
    python tools/bench_sac.py --part tasks --seeds 0 1 2 3 4 --tasks reach push --rows recipe bc_only sac_no_demos
    python tools/bench_sac.py --part loop --loop-steps 1000 --main-steps 3000   # full loops only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, cuda={torch.cuda.is_available()}"


def _fill_random(env_id: str, n: int, seed: int = 0):
    import gymnasium as gym

    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        a = env.action_space.sample()
        nobs, r, term, trunc, _ = env.step(a)
        rows.append((obs, a, r, nobs, term, trunc))
        obs = nobs if not (term or trunc) else env.reset()[0]
    env.close()
    return env, rows


def bench_sb3_updates(rows, env_id: str, updates: int, utd: int) -> float:
    from stable_baselines3 import SAC as SB3SAC

    import gymnasium as gym

    env = gym.make(env_id)
    model = SB3SAC("MlpPolicy", env, batch_size=256, policy_kwargs={"net_arch": [256, 256]}, learning_starts=0,
                   gradient_steps=utd, train_freq=1, device="cpu", seed=0, verbose=0)
    for o, a, r, no, te, tr in rows:
        model.replay_buffer.add(o[None], no[None], a[None], np.array([r]), np.array([te]), [{"TimeLimit.truncated": tr}])
    model._setup_learn(total_timesteps=1, callback=None)
    model.train(gradient_steps=20, batch_size=256)  # warm up
    t = time.perf_counter()
    model.train(gradient_steps=updates, batch_size=256)
    return updates / (time.perf_counter() - t)


COMPILE_S: dict[str, float] = {}  # sac.compile=on: seconds of the first (compiling) update, per precision


def bench_ours_updates(rows, env_id: str, updates: int, device: str = "cpu", actor_every: int = 1,
                       precision: str = "fp32", compile: str = "off", extra: dict | None = None) -> float:
    """Updates/s of our SAC on ``rows``; ``extra`` adds SACConfig fields (e.g. ``{"n_critics": 10}``)."""
    import gymnasium as gym

    from roborl.config import build
    from roborl.learners.sac import SAC, SACConfig
    from roborl.store import ReplayStore, Sampler
    from roborl.store.config import SamplerConfig

    env = gym.make(env_id)
    with tempfile.TemporaryDirectory() as d:
        store = ReplayStore.create(Path(d) / "s", env_id=env_id, observation_space=env.observation_space,
                                   action_space=env.action_space, online_capacity=10**6)
        prev_done = True
        for o, a, r, no, te, tr in rows:
            if prev_done:
                store.start_episode(o, partition="online")
            store.add_step(action=a, executed_action=a, reward=float(r), next_obs=no, terminated=bool(te),
                           truncated=bool(tr))
            prev_done = te or tr
        sampler = Sampler(store, build(SamplerConfig, {}), device=device, seed=0)
        learner = SAC(env.observation_space.shape[0], env.action_space.shape[0],
                      build(SACConfig, {"normalize_obs": False, "actor_every": actor_every,
                                          "precision": precision, "compile": compile, **(extra or {})}), device)
        t = time.perf_counter()
        learner.update(sampler.sample(256, gamma=0.99))
        if compile == "on":
            COMPILE_S.setdefault(f"{device}_{precision}", round(time.perf_counter() - t, 1))
        for _ in range(20):
            learner.update(sampler.sample(256, gamma=0.99))
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(updates):
            learner.update(sampler.sample(256, gamma=0.99))
        if device == "cuda":
            torch.cuda.synchronize()
        rate = updates / (time.perf_counter() - t)
        store.close()
    return rate


def bench_loop(env_id: str, steps: int, utd: int, device: str = "cpu", precision: str = "fp32") -> dict:
    """Full loop through our runner (env stack + store + sampler + learner): env-steps/s and updates/s."""
    from roborl import config as C
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner

    with tempfile.TemporaryDirectory() as d:
        # HalfCheetah episodes are 1000 steps: learning starts once the first one is in the store,
        # so the second logged row (steps warm..warm+steps) is the learning phase.
        warm = 1000
        cfg = C.load(RunConfig, None, [f"env.id={env_id}", f"run.dir={d}/run", f"train.total_steps={warm + steps}",
                                       "train.eval_every=0", "train.eval_episodes=1", f"train.log_every={steps}",
                                       f"train.checkpoint_every={10 * (warm + steps)}", f"sac.utd={utd}",
                                       f"sac.warmup_steps={warm}", "sac.normalize_obs=false", f"device={device}",
                                       f"sac.precision={precision}"])
        runner = OffPolicyRunner(cfg, Path(d) / "run")
        t = time.perf_counter()
        runner.train()
        wall = time.perf_counter() - t
        runner.close()
        from roborl.runs import read_metrics

        rows = [r for r in read_metrics(Path(d) / "run") if "env_steps_per_s" in r]
    last = rows[-1] if rows else {}
    return {"env_steps_per_s": last.get("env_steps_per_s"), "updates_per_s": last.get("updates_per_s"),
            "wall_s_incl_warmup_and_final_eval": round(wall, 1)}


def bench_sb3_loop(env_id: str, steps: int, utd: int) -> float:
    """SB3 SAC's own learn() loop: env-steps/s after learning starts (same nets, batch, UTD)."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.callbacks import BaseCallback

    warm = 1000

    class Clock(BaseCallback):
        t0: float = 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps == warm:
                Clock.t0 = time.perf_counter()
            return True

    model = SB3SAC("MlpPolicy", gym.make(env_id), batch_size=256, policy_kwargs={"net_arch": [256, 256]},
                   learning_starts=warm, gradient_steps=utd, train_freq=1, device="cpu", seed=0, verbose=0)
    model.learn(total_timesteps=warm + steps, callback=Clock())
    return steps / (time.perf_counter() - Clock.t0)


def update_flops(obs: int, act: int, hidden: tuple[int, ...] = (256, 256), batch: int = 256, n_critics: int = 2) -> float:
    """Matmul FLOPs of one SAC update (critic step + actor step, twin critics, no LayerNorm), 2 per MAC:
    target pass (actor + target critics forward), critic forward + backward (weight grads of every layer,
    input grads of all but the first), actor step (actor forward, critics forward, critics' input grads
    through every layer with frozen weights, actor weight grads and input grads of all but its first layer)."""
    c_dims, a_dims = [obs + act, *hidden, 1], [obs, *hidden, 2 * act]
    c_fwd = n_critics * sum(i * o for i, o in zip(c_dims[:-1], c_dims[1:]))
    a_fwd = sum(i * o for i, o in zip(a_dims[:-1], a_dims[1:]))
    c_in_grads = n_critics * sum(i * o for i, o in zip(c_dims[1:-1], c_dims[2:]))  # layers 2..L
    a_in_grads = sum(i * o for i, o in zip(a_dims[1:-1], a_dims[2:]))
    macs = (a_fwd + c_fwd) + (c_fwd + c_fwd + c_in_grads) + (a_fwd + c_fwd + c_fwd + a_fwd + a_in_grads)
    return 2.0 * batch * macs


def gemm_rate(dtype: torch.dtype, n: int = 256, members: int = 2, reps: int = 200) -> float:
    """GFLOP/s of one batched [members, n, n] @ [members, n, n] matmul at the current thread count:
    the update's dominant kernel (the critic ensemble's hidden layer)."""
    a, b = torch.randn(members, n, n, dtype=dtype), torch.randn(members, n, n, dtype=dtype)
    for _ in range(20):
        torch.bmm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.bmm(a, b)
    return 2.0 * members * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def part_throughput(args) -> dict:
    env_id = "HalfCheetah-v5"
    _, rows = _fill_random(env_id, 5_000)
    out: dict = {"env": env_id, "batch": 256, "hidden": [256, 256], "torch_threads": torch.get_num_threads()}
    # Interleave the sides so machine load hits them alike; both at the same torch thread count.
    out["updates_per_s"] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        res: dict[str, list[float]] = {"roborl": [], "roborl_compiled": [], "roborl_bf16": [],
                                       "roborl_bf16_compiled": [], "roborl_actor_every2": [], "sb3": []}
        for _ in range(args.repeats):
            res["roborl"].append(bench_ours_updates(rows, env_id, args.updates))
            res["sb3"].append(bench_sb3_updates(rows, env_id, args.updates, 1))
            res["roborl_compiled"].append(bench_ours_updates(rows, env_id, args.updates, compile="on"))
            res["roborl_bf16"].append(bench_ours_updates(rows, env_id, args.updates, precision="bf16"))
            res["roborl_bf16_compiled"].append(
                bench_ours_updates(rows, env_id, args.updates, precision="bf16", compile="on"))
            res["roborl_actor_every2"].append(bench_ours_updates(rows, env_id, args.updates, actor_every=2))
            for n in args.critics:  # the RLPD/REDQ ensemble: n critics, the target's min over a random pair
                res.setdefault(f"roborl_critics_{n}", []).append(
                    bench_ours_updates(rows, env_id, args.updates, extra={"n_critics": n, "critic_subset": 2}))
        m: dict = {k: round(float(np.median(v)), 1) for k, v in res.items()}
        # Median of per-repeat ratios: each repeat's sides ran back to back under the same load.
        sb3 = np.array(res["sb3"])
        for k, name in (("roborl", "speedup_same_work"), ("roborl_compiled", "speedup_compiled"),
                        ("roborl_bf16", "speedup_bf16"), ("roborl_bf16_compiled", "speedup_bf16_compiled"),
                        ("roborl_actor_every2", "speedup_actor_every2"),
                        *((f"roborl_critics_{n}", f"speedup_critics_{n}") for n in args.critics)):
            m[name] = round(float(np.median(np.array(res[k]) / sb3)), 2)
        # The compute bound: the update's matmul FLOPs at this thread count's measured GEMM rate.
        flops = update_flops(rows[0][0].shape[0], rows[0][1].shape[0])
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            rate = gemm_rate(dt)
            m[f"gemm_gflops_{name}"] = round(rate, 1)
            m[f"matmul_bound_updates_per_s_{name}"] = round(rate * 1e9 / flops, 1)
        m["update_gflop"] = round(flops / 1e9, 3)
        out["updates_per_s"][f"threads_{threads}"] = m
    out["compile_s_first_update"] = dict(COMPILE_S)
    torch.set_num_threads(1)
    if torch.cuda.is_available():
        out["updates_per_s"]["roborl_cuda"] = round(bench_ours_updates(rows, env_id, args.updates, "cuda"), 1)
        out["updates_per_s"]["roborl_cuda_bf16"] = round(
            bench_ours_updates(rows, env_id, args.updates, "cuda", precision="bf16"), 1)
    if not args.skip_loop:
        # Full loops at the runner's default of 1 torch thread, both sides.
        torch.set_num_threads(1)
        out["full_loop_utd1"] = bench_loop(env_id, args.loop_steps, 1)
        out["full_loop_utd1_bf16"] = bench_loop(env_id, args.loop_steps, 1, precision="bf16")
        out["full_loop_utd1"]["sb3_env_steps_per_s"] = round(bench_sb3_loop(env_id, args.loop_steps, 1), 1)
        out["full_loop_utd20"] = bench_loop(env_id, max(100, args.loop_steps // 10), 20)
        out["full_loop_utd20_bf16"] = bench_loop(env_id, max(100, args.loop_steps // 10), 20, precision="bf16")
    return out


def part_loop(args) -> dict:
    """Full loops only, for side-by-side runs of two checkouts (the same tool, PYTHONPATH picks the code):
    HalfCheetah-v5 at UTD 1 (fp32) through our runner, and the main job (configs/default.yaml) cut to
    ``--main-steps`` env steps (BC pretraining, demos, HER, UTD 2, bf16 where native: all as shipped)."""
    import subprocess

    torch.set_num_threads(1)
    env_id = "HalfCheetah-v5"
    out: dict = {"full_loop_utd1": bench_loop(env_id, args.loop_steps, 1), "overrides": args.override}
    with tempfile.TemporaryDirectory() as d:
        ov = [f"run.dir={d}/main", f"train.total_steps={args.main_steps}", "train.eval_every=0",
              f"train.log_every={max(100, args.main_steps // 4)}", "train.max_minutes=null", *args.override]
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(REPO / "configs" / "default.yaml"), *ov,
                            "--quiet"], capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"bench_sac: main job failed: {r.stderr.strip()[-1000:]}")
        from roborl.runs import read_metrics

        rows = [x for x in read_metrics(Path(d) / "main") if "env_steps_per_s" in x]
    out["main_job"] = {"steps": args.main_steps, "wall_s": round(wall, 1),
                       "env_steps_per_s_per_log_row": [round(x["env_steps_per_s"], 1) for x in rows],
                       "updates_per_s_last": rows[-1].get("updates_per_s") if rows else None}
    return out


def _run_train(overrides: list[str]) -> dict:
    from roborl import config as C
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner

    cfg = C.load(RunConfig, REPO / "configs" / "default.yaml", overrides)
    runner = OffPolicyRunner(cfg, Path(cfg.run.dir))
    try:
        runner.train()
    finally:
        runner.close()
    from roborl.runs import read_metrics

    return {"evals": [(r["step"], r["eval/success"]) for r in read_metrics(cfg.run.dir) if "eval/success" in r]}


ABLATION_ROWS: dict[str, list[str]] = {
    # Rows are configs/default.yaml plus these overrides. The default has HER on and ramps the
    # residual to beta 2; rows measured before that pin her_fraction=0 and beta 1 explicitly.
    # SAC from scratch: no demos at all, random warmup.
    "sac_scratch": ["store.demos=[]", "sac.bc_pretrain_steps=0", "sac.residual=false",
                    "store.sampler.demo_fraction=0", "sac.warmup_steps=1000", "store.sampler.her_fraction=0"],
    # RLPD-style: demos only through 50/50 symmetric sampling (no BC, no residual).
    "rlpd_demo_mix": ["sac.residual=false", "sac.bc_pretrain_steps=0", "sac.warmup_steps=1000",
                      "store.sampler.her_fraction=0"],
    # Demo mix + BC base + residual ramped to beta 1 (the default before HER).
    "demo_mix_residual": ["store.sampler.her_fraction=0", "sac.residual_beta_final=1.0"],
    "demo_mix_residual_per": ["store.sampler.kind=per", "store.sampler.her_fraction=0", "sac.residual_beta_final=1.0"],
    "demo_mix_residual_lap": ["store.sampler.kind=lap", "store.sampler.her_fraction=0", "sac.residual_beta_final=1.0"],
    # The default config: demo mix + residual (ramped to beta 2) + hindsight goal relabelling (HER).
    "demo_mix_residual_her": [],
    "demo_mix_residual_her_lap": ["store.sampler.kind=lap"],
}


def part_ablation(args) -> dict:
    from roborl import config as C
    from roborl.eval.episodes import run_episodes
    from roborl.learners.sac import SACPolicy
    from roborl.runners.config import RunConfig
    from roborl.eval.episodes import eval_seed
    from roborl.runners.off_policy import OffPolicyRunner

    out: dict = {"config": "configs/default.yaml", "steps": args.steps, "seeds": args.seeds, "rows": {}}
    tmp = Path(tempfile.mkdtemp(prefix="roborl-ablation-"))
    rows = args.rows or ["bc_only", *ABLATION_ROWS]
    unknown = [r for r in rows if r != "bc_only" and r not in ABLATION_ROWS]
    if unknown:
        raise SystemExit(f"bench_sac: unknown --rows {unknown}; choose from {['bc_only', *ABLATION_ROWS]}")
    # BC only: the residual base policy after BC pretraining, evaluated with no RL.
    bc = []
    for s in args.seeds if "bc_only" in rows else []:
        cfg = C.load(RunConfig, REPO / "configs" / "default.yaml", [f"run.seed={s}", f"run.dir={tmp}/bc{s}",
                                                                   *args.override])
        runner = OffPolicyRunner(cfg, tmp / f"bc{s}")
        runner.start_learning()
        runner.learner.beta.fill_(0.0)  # base policy alone
        res = run_episodes(SACPolicy(runner.learner), cfg.env, args.eval_episodes, seed=eval_seed(cfg.run.seed))
        bc.append(res.success_rate)
        runner.close()
    if bc:
        out["rows"]["bc_only"] = {"success": bc, "mean_success": float(np.mean(bc))}
    for name in [r for r in rows if r != "bc_only"]:
        per_seed = []
        for s in args.seeds:
            t = time.time()
            r = _run_train(ABLATION_ROWS[name] + [f"run.seed={s}", f"run.dir={tmp}/{name}-{s}",
                                                  f"train.total_steps={args.steps}", f"train.eval_every={args.eval_every}",
                                                  f"train.eval_episodes={args.eval_episodes}",
                                                  *args.override])
            hit = next((st for st, sr in r["evals"] if sr >= 0.9), None)
            per_seed.append({"seed": s, "steps_to_90": hit, "final_success": r["evals"][-1][1] if r["evals"] else None,
                             "wall_s": round(time.time() - t, 1)})
            print(json.dumps({name: per_seed[-1]}), file=sys.stderr, flush=True)
        hits = [p["steps_to_90"] for p in per_seed if p["steps_to_90"] is not None]
        out["rows"][name] = {"per_seed": per_seed, "reached_90": f"{len(hits)}/{len(per_seed)}",
                             "median_steps_to_90": float(np.median(hits)) if hits else None,
                             "mean_final_success": float(np.mean([p["final_success"] or 0 for p in per_seed]))}
    return out


def part_halfcheetah(args) -> dict:
    """Return on HalfCheetah-v5 after ``--steps`` env steps, ours (configs/sac_halfcheetah.yaml) vs SB3 SAC
    with the same settings (256x256, batch 256, UTD 1, lr 3e-4, 10k random warmup steps, auto-alpha),
    each evaluated on the same deterministic episodes (env seeds eval_seed(run.seed) + i)."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC

    from roborl import config as C
    from roborl.eval.episodes import eval_seed
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner

    tmp = Path(tempfile.mkdtemp(prefix="roborl-cheetah-"))
    out: dict = {"env": "HalfCheetah-v5", "steps": args.steps, "eval_episodes": args.eval_episodes, "roborl": [], "sb3": []}
    for s in args.seeds:
        if "roborl" in args.sides:
            cfg = C.load(RunConfig, REPO / "configs" / "sac_halfcheetah.yaml",
                         [f"run.seed={s}", f"run.dir={tmp}/ours{s}", f"train.total_steps={args.steps}",
                          f"train.eval_every={args.steps}", f"train.eval_episodes={args.eval_episodes}",
                          f"train.checkpoint_every={args.steps}", *args.override])
            t = time.time()
            runner = OffPolicyRunner(cfg, Path(cfg.run.dir))
            try:
                summary = runner.train()
            finally:
                runner.close()
            out["roborl"].append({"seed": s, "return": summary["eval_return"], "wall_s": round(time.time() - t, 1)})
            print(json.dumps({"roborl": out["roborl"][-1]}), file=sys.stderr, flush=True)
        if "sb3" in args.sides:
            torch.set_num_threads(1)  # the same single thread our runner uses (train.threads: 1)
            t = time.time()
            model = SB3SAC("MlpPolicy", gym.make("HalfCheetah-v5"), batch_size=256, learning_rate=3e-4,
                           policy_kwargs={"net_arch": [256, 256]}, learning_starts=10_000, train_freq=1,
                           gradient_steps=1, device="cpu", seed=s, verbose=0)
            model.learn(total_timesteps=args.steps)
            env = gym.make("HalfCheetah-v5")
            rets = []
            for i in range(args.eval_episodes):
                obs, _ = env.reset(seed=eval_seed(s) + i)
                done, ret = False, 0.0
                while not done:
                    obs, r, term, trunc, _ = env.step(model.predict(obs, deterministic=True)[0])
                    ret += float(r)
                    done = term or trunc
                rets.append(ret)
            out["sb3"].append({"seed": s, "return": float(np.mean(rets)), "wall_s": round(time.time() - t, 1)})
            print(json.dumps({"sb3": out["sb3"][-1]}), file=sys.stderr, flush=True)
    for side in ("roborl", "sb3"):
        r = [x["return"] for x in out[side]]
        if r:
            out[f"{side}_mean"], out[f"{side}_std"] = float(np.mean(r)), float(np.std(r))
    return out


# --part tasks: the recipe on each shipped task, at that task's env-step budget.
TASK_RUNS: dict[str, tuple[str, int]] = {
    "reach": ("configs/sac_reach.yaml", 3_000),
    "push": ("configs/sac_push_10k.yaml", 10_000),
    "pickplace": ("configs/sac_pickplace.yaml", 30_000),
    "peginsert": ("configs/sac_peginsert.yaml", 30_000),
}
# Rows: the task's config as is; BC alone (the residual base after BC pretraining, no RL); the same
# config without demos (no demo partition, BC or residual; 1,000 random warmup steps; HER stays where the
# task has it, so this is the strongest no-demo baseline).
TASK_ROWS: dict[str, list[str]] = {
    "recipe": [],
    "bc_only": [],
    "sac_no_demos": ["store.demos=[]", "sac.bc_pretrain_steps=0", "sac.residual=false",
                     "store.sampler.demo_fraction=0", "sac.warmup_steps=1000"],
}
HELD_OUT_SEED = 20_000  # held-out eval episodes reset with seeds 20000.. (training: run.seed.., in-run eval: 10000+run.seed..)


def _failure_state(env, task: str) -> dict:
    """Where things ended in a failed episode (m): the figures the BENCHMARKS failure analysis quotes."""
    s = env.unwrapped.task_state()
    out = {"grip_open": round(float(s["grip_open"]), 4)}
    if task == "reach":
        out["ee_goal"] = round(float(np.linalg.norm(s["goal"] - s["ee"])), 4)
        return out
    obj, goal, ee = s["object"], s["goal"], s["ee"]
    out.update(obj_goal_xy=round(float(np.linalg.norm(goal[:2] - obj[:2])), 4),
               obj_goal_z=round(float(obj[2] - goal[2]), 4), ee_obj=round(float(np.linalg.norm(obj - ee)), 4))
    if "axis" in s:
        out["peg_axis_z"] = round(float(s["axis"][2]), 3)
    return out


def held_out_eval(policy, env_cfg, task: str, episodes: int, seed: int = HELD_OUT_SEED) -> dict:
    """Deterministic episodes ``seed + i`` (success = is_success at any step, as the runners' eval counts it),
    with the final state of every failure."""
    from roborl.envs.config import build_env

    env = build_env(env_cfg, seed=seed, eval=True)
    wins, final_wins, failures = 0, 0, []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        done, hit = False, bool(info.get("is_success", False))
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.act(np.asarray(obs)[None], deterministic=True)[0])
            hit = hit or bool(info.get("is_success", False))
            done = terminated or truncated
        wins += hit
        final_wins += bool(info.get("is_success", False))
        if not hit:
            failures.append({"episode": i, **_failure_state(env, task)})
    env.close()
    return {"episodes": episodes, "success": wins / episodes, "success_at_last_step": final_wins / episodes,
            "failures": failures}


def part_tasks(args) -> dict:
    from roborl import config as C
    from roborl.learners.sac import SACPolicy
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner as SACRunner
    from roborl.runs import read_metrics

    tasks = args.tasks or list(TASK_RUNS)
    rows = args.rows or list(TASK_ROWS)
    bad = [t for t in tasks if t not in TASK_RUNS] + [r for r in rows if r not in TASK_ROWS]
    if bad:
        raise SystemExit(f"bench_sac: unknown --tasks/--rows {bad}; tasks {list(TASK_RUNS)}, rows {list(TASK_ROWS)}")
    tmp = Path(tempfile.mkdtemp(prefix="roborl-tasks-"))
    out: dict = {"held_out_episodes": args.eval_episodes, "held_out_seed": HELD_OUT_SEED, "tasks": {}}
    for task in tasks:
        cfg_path, budget = TASK_RUNS[task]
        steps = args.steps or budget
        res: dict = {"config": cfg_path, "steps": steps, "rows": {}}
        for row in rows:
            per_seed = []
            for s in args.seeds:
                run_dir = tmp / f"{task}-{row}-{s}"
                ov = [*TASK_ROWS[row], f"run.seed={s}", f"run.dir={run_dir}", f"train.total_steps={steps}",
                      f"train.eval_every={args.eval_every or steps // 3}", "train.eval_episodes=20",
                      "train.max_minutes=null", *args.override]
                cfg = C.load(RunConfig, REPO / cfg_path, ov)
                t = time.time()
                runner = SACRunner(cfg, run_dir)
                try:
                    if row == "bc_only":
                        runner.start_learning()
                        runner.learner.beta.fill_(0.0)  # the BC base policy alone
                        curve = []
                    else:
                        runner.train(quiet=True)
                        curve = [(r["step"], r["eval/success"]) for r in read_metrics(run_dir) if "eval/success" in r]
                    train_s = time.time() - t
                    t = time.time()
                    ev = held_out_eval(SACPolicy(runner.learner), cfg.env, task, args.eval_episodes)
                finally:
                    runner.close()
                rec = {"seed": s, "held_out_success": ev["success"], "success_at_last_step": ev["success_at_last_step"],
                       "curve_20eps": curve, "train_wall_s": round(train_s, 1), "eval_wall_s": round(time.time() - t, 1),
                       "failures": ev["failures"][:args.max_failures], "n_failures": len(ev["failures"])}
                per_seed.append(rec)
                print(json.dumps({task: {row: {k: v for k, v in rec.items() if k != "failures"}}}), file=sys.stderr,
                      flush=True)
            succ = [p["held_out_success"] for p in per_seed]
            res["rows"][row] = {"per_seed": per_seed, "mean": float(np.mean(succ)), "std": float(np.std(succ)),
                                "min": float(np.min(succ)), "max": float(np.max(succ))}
        out["tasks"][task] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["throughput", "ablation", "halfcheetah", "tasks", "loop"], default="throughput")
    p.add_argument("--main-steps", type=int, default=3000, help="loop: env steps of the shortened main job")
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loop-steps", type=int, default=1000)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="throughput: torch thread counts")
    p.add_argument("--critics", type=int, nargs="*", default=[],
                   help="throughput: also time our SAC with these critic-ensemble sizes (target min over a random pair)")
    p.add_argument("--skip-loop", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=None, help="env steps (ablation/halfcheetah: 20000/100000; "
                   "tasks: the task's budget)")
    p.add_argument("--eval-every", type=int, default=None, help="ablation: 2000; tasks: a third of the budget")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per eval (ablation/halfcheetah: 20; tasks: 200 held-out episodes per run)")
    p.add_argument("--rows", nargs="*", default=None,
                   help=f"ablation: subset of {['bc_only', *ABLATION_ROWS]}; tasks: subset of {list(TASK_ROWS)}")
    p.add_argument("--sides", nargs="+", default=["roborl", "sb3"], help="halfcheetah: which sides to train")
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides for our runs")
    p.add_argument("--tasks", nargs="*", default=None, help=f"tasks: subset of {list(TASK_RUNS)}")
    p.add_argument("--max-failures", type=int, default=10, help="tasks: failed held-out episodes listed per run")
    args = p.parse_args()
    if args.part != "tasks":
        args.steps = args.steps or 20_000
        args.eval_every = args.eval_every or 2_000
        args.eval_episodes = args.eval_episodes or 20
    else:
        args.eval_episodes = args.eval_episodes or 200
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t = time.time()
    out = {"bench": "sac", "part": args.part, "date": time.strftime("%Y-%m-%d"), "machine": _machine()}
    parts = {"throughput": part_throughput, "ablation": part_ablation, "halfcheetah": part_halfcheetah,
             "tasks": part_tasks, "loop": part_loop}
    out.update(parts[args.part](args))
    out["bench_wall_s"] = round(time.time() - t, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
