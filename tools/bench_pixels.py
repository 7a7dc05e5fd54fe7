"""Learning from cameras: throughput, and Pixel Push (success against env steps).

    python tools/bench_pixels.py --part throughput [--batch 256] [--size 64] [--iters 5] [--threads 1]
    MUJOCO_GL=osmesa python tools/bench_pixels.py --part push --seeds 0 1 2 [--steps 30000] [--variants recipe bc_pixels state_recipe]

``throughput``: a real ReplayStore on disk (two 64x64 cameras + proprio, random frames) and the real
Sampler feed ``SAC.update``; ``frozen`` loads a saved encoder (``sac.encoder.weights``), whose embedding
cache fills during the warm-up pass over the store's rows, as it would during a run. One JSON line per setting.

``push``: roborl/Push-v0 in ``proprio+pixels`` mode with the 20 demos of demos/push_pixels, one run per
(row, seed), one at a time, through the real runner (:class:`roborl.runners.off_policy.OffPolicyRunner`).
Rows: ``recipe`` (configs/pixels_push.yaml: encoder BC-pretrained on the demo frames at startup, frozen,
residual SAC over a BC base), ``bc_pixels`` (that config's BC base alone after pretraining, no RL) and
``state_recipe`` (configs/default.yaml: the state-based default recipe with object and goal coordinates and
HER, at the same budget). Per run: the in-run curve (20 episodes per eval), then ``--eval-episodes``
held-out deterministic episodes (env seeds 20000..), wall time and the load average. One JSON line per run
on stderr, the summary on stdout.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch


def _store(root: Path, size: int, rows: int, seed: int = 0):  # type: ignore[no-untyped-def]
    from roborl.store import ReplayStore

    img = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
    obs_space = gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (9,), np.float32),
                                 "pixels": gym.spaces.Dict({"front": img, "wrist": img})})
    act_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    st = ReplayStore.open_or_create(root, env_id="bench/pixels", observation_space=obs_space, action_space=act_space,
                                    online_capacity=rows + 64)
    rng = np.random.default_rng(seed)
    ep = 50

    def o():  # type: ignore[no-untyped-def]
        return {"proprio": rng.standard_normal(9).astype(np.float32),
                "pixels": {"front": rng.integers(0, 256, (size, size, 3), np.uint8),
                           "wrist": rng.integers(0, 256, (size, size, 3), np.uint8)}}

    for _ in range(rows // ep):
        st.start_episode(o(), partition="online")
        for t in range(ep):
            st.add_step(action=rng.uniform(-1, 1, 4).astype(np.float32), reward=float(rng.standard_normal()),
                        next_obs=o(), terminated=False, truncated=t == ep - 1)
    return st, obs_space


def throughput(args: argparse.Namespace) -> None:
    from roborl.config import build
    from roborl.envs.spaces import leaves
    from roborl.learners import encoders as E
    from roborl.learners.config import SACConfig
    from roborl.learners.sac import SAC
    from roborl.store import Sampler
    from roborl.store.config import SamplerConfig

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        st, obs_space = _store(Path(tmp) / "store", args.size, args.rows)
        spec = {lf.name: lf.shape for lf in leaves(obs_space)}
        sampler = Sampler(st, build(SamplerConfig, {}), device="cpu", seed=0)
        weights = Path(tmp) / "enc.safetensors"
        E.save_encoder(weights, E.PixelEncoder(spec, downsample=args.downsample))
        for mode in args.modes:
            for prec in args.precisions:
                enc = {"weights": str(weights)} if mode == "frozen" else {}
                enc["downsample"] = args.downsample
                cfg = build(SACConfig, {"batch_size": args.batch, "precision": prec, "encoder": enc})
                # state: the same SAC on the proprio leaf alone (the speed the frozen path aims at).
                sac = SAC({"proprio": (9,)} if mode == "state" else spec, 4, cfg)
                torch.manual_seed(0)
                if mode == "frozen":  # fill the cache once, as the run's first updates would
                    for _ in range(max(2, 4 * args.rows // args.batch)):
                        sac.update(sampler.sample(args.batch, gamma=0.99))
                else:
                    sac.update(sampler.sample(args.batch, gamma=0.99))
                t0 = time.perf_counter()
                t_sample = 0.0
                for _ in range(args.iters):
                    s0 = time.perf_counter()
                    b = sampler.sample(args.batch, gamma=0.99)
                    t_sample += time.perf_counter() - s0
                    sac.update(b)
                dt = time.perf_counter() - t0
                print(json.dumps({"part": "throughput", "mode": mode, "precision": prec, "batch": args.batch,
                                  "downsample": args.downsample,
                                  "cameras": 2, "size": args.size, "iters": args.iters,
                                  "updates_per_s": round(args.iters / dt, 3),
                                  "ms_per_update": round(1000 * dt / args.iters, 1),
                                  "ms_sample": round(1000 * t_sample / args.iters, 1),
                                  "threads": args.threads}), flush=True)


REPO = Path(__file__).resolve().parents[1]
PUSH_ROWS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("configs/pixels_push.yaml", []),
    "bc_pixels": ("configs/pixels_push.yaml", []),
    "state_recipe": ("configs/default.yaml", []),
}
HELD_OUT_SEED = 20_000  # held-out episodes reset with seeds 20000.. (training: run.seed.., in-run eval: 10000+run.seed..)


def _failure_state(env) -> dict:  # type: ignore[no-untyped-def]
    """Where a failed Push episode ended (m): object-goal distance in the plane, gripper-object distance."""
    s = env.unwrapped.task_state()
    obj, goal, ee = s["object"], s["goal"], s["ee"]
    return {"obj_goal_xy": round(float(np.linalg.norm(goal[:2] - obj[:2])), 4),
            "obj_moved": None, "ee_obj": round(float(np.linalg.norm(obj - ee)), 4)}


def held_out_eval(policy, env_cfg, episodes: int, seed: int = HELD_OUT_SEED) -> dict:  # type: ignore[no-untyped-def]
    """Deterministic episodes ``seed + i`` (success = is_success at any step); Dict or flat observations."""
    from roborl.envs.config import build_env

    env = build_env(env_cfg, seed=seed, eval=True)
    wins, failures = 0, []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        obj0 = np.array(env.unwrapped.task_state()["object"])
        done, hit = False, bool(info.get("is_success", False))
        while not done:
            o = obs if isinstance(obs, dict) else np.asarray(obs)[None]
            obs, _, terminated, truncated, info = env.step(policy.act(o, deterministic=True)[0])
            hit = hit or bool(info.get("is_success", False))
            done = terminated or truncated
        wins += hit
        if not hit:
            f = _failure_state(env)
            f["obj_moved"] = round(float(np.linalg.norm(np.array(env.unwrapped.task_state()["object"])[:2] - obj0[:2])), 4)
            failures.append({"episode": i, **f})
    env.close()
    return {"episodes": episodes, "success": wins / episodes, "failures": failures}


def part_push(args: argparse.Namespace) -> None:
    import os
    import sys

    from roborl import config as C
    from roborl.learners.sac import SACPolicy
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner
    from roborl.runs import read_metrics

    rows = args.variants or list(PUSH_ROWS)
    bad = [r for r in rows if r not in PUSH_ROWS]
    if bad:
        raise SystemExit(f"bench_pixels: unknown --variants {bad}; variants {list(PUSH_ROWS)}")
    tmp = Path(args.out_dir or tempfile.mkdtemp(prefix="roborl-pixpush-"))
    summary: dict = {"steps": args.steps, "held_out_episodes": args.eval_episodes, "rows": {}}
    for row in rows:
        cfg_path, extra = PUSH_ROWS[row]
        per_seed = []
        for s in args.seeds:
            run_dir = tmp / f"{row}-{s}"
            ov = [*extra, f"run.seed={s}", f"run.dir={run_dir}", f"train.total_steps={args.steps}",
                  f"train.eval_every={args.eval_every or max(1, args.steps // 6)}", "train.eval_episodes=20",
                  "train.max_minutes=null", f"train.threads={args.threads}", "device=cpu", *args.override]
            cfg = C.load(RunConfig, REPO / cfg_path, ov)
            shared_enc = tmp / f"recipe-{s}" / "encoder.safetensors"
            if row == "bc_pixels" and shared_enc.is_file() and not (run_dir / "encoder.safetensors").exists():
                # The BC baseline reads the recipe run's pretrained encoder (same seed, same demos): the
                # runner reuses an encoder.safetensors already in its run dir instead of pretraining again.
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(shared_enc, run_dir / "encoder.safetensors")
            load0 = os.getloadavg()
            t = time.time()
            runner = OffPolicyRunner(cfg, run_dir)
            try:
                if row == "bc_pixels":
                    runner.start_learning()
                    runner.learner.beta.fill_(0.0)  # the BC base policy alone
                    curve: list = []
                else:
                    runner.train(quiet=args.quiet)
                    curve = [(r["step"], r["eval/success"]) for r in read_metrics(run_dir) if "eval/success" in r]
                train_s = time.time() - t
                t = time.time()
                ev = held_out_eval(SACPolicy(runner.learner), cfg.env, args.eval_episodes)
            finally:
                runner.close()
            enc = run_dir / "encoder.safetensors"
            pre = None
            if enc.is_file():
                from roborl.learners.encoders import read_encoder_meta

                m = read_encoder_meta(enc)
                pre = {"bc_loss": m.get("train_bc_loss"), "seconds": m.get("seconds")}
            rec = {"row": row, "seed": s, "held_out_success": ev["success"], "curve_20eps": curve,
                   "train_wall_s": round(train_s, 1), "eval_wall_s": round(time.time() - t, 1),
                   "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
                   "encoder_pretrain": pre, "n_failures": len(ev["failures"]), "failures": ev["failures"][:10]}
            per_seed.append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
        succ = [p["held_out_success"] for p in per_seed]
        summary["rows"][row] = {"per_seed": per_seed, "mean": float(np.mean(succ)), "min": float(np.min(succ)),
                                "max": float(np.max(succ))}
    print(json.dumps(summary), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["throughput", "push"], default="throughput")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="push: run seeds")
    ap.add_argument("--steps", type=int, default=30_000, help="push: env steps per run")
    ap.add_argument("--eval-every", type=int, default=None, help="push: in-run eval period (default steps / 6)")
    ap.add_argument("--eval-episodes", type=int, default=100, help="push: held-out episodes per run")
    ap.add_argument("--variants", nargs="*", default=None, help=f"push: subset of {list(PUSH_ROWS)}")
    ap.add_argument("--override", nargs="*", default=[], help="push: extra key=value config overrides")
    ap.add_argument("--out-dir", default=None, help="push: where the run dirs go (default: a temp dir)")
    ap.add_argument("--quiet", action="store_true", help="push: no progress lines")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="*", default=["state", "e2e", "frozen"], help="throughput: subset of state e2e frozen")
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], help="throughput: subset of fp32 bf16")
    ap.add_argument("--downsample", type=int, default=1, help="throughput: stride-2 conv layers of the encoder")
    args = ap.parse_args()
    (part_push if args.part == "push" else throughput)(args)


if __name__ == "__main__":
    main()
