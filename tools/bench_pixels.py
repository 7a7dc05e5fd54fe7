"""Learning from cameras: throughput, and Pixel Push (success against env steps).

    python tools/bench_pixels.py --part throughput [--batch 256] [--size 64] [--iters 5] [--threads 1]
    MUJOCO_GL=osmesa python tools/bench_pixels.py --part push --seeds 0 1 2 [--steps 30000] [--variants recipe bc_pixels state_recipe]
    MUJOCO_GL=osmesa python tools/bench_pixels.py --part probe --encoders bc=runs/x/encoder.safetensors kp=kp.safetensors

``throughput``: a real ReplayStore on disk (two 64x64 cameras + proprio, random frames) and the real
Sampler feed ``SAC.update``; ``frozen`` loads a saved encoder (``sac.encoder.weights``), whose embedding
cache fills during the warm-up pass over the store's rows, as it would during a run. One JSON line per setting.

``probe``: a linear probe of frozen encoders. Noisy scripted-expert Push episodes in ``proprio+pixels``
mode (env seeds 30000.. to fit, 40000.. to test: scenes no encoder saw); the sim's cube and goal xy of
each kept frame are the labels, used for evaluation only. Ridge regression from [embedding, proprio] to
[cube xy, goal xy] (lambda by cross-validation over fit episodes), RMSE in cm on the test episodes, with
the ``proprio``-only and constant (``mean``) rows as the floor. One JSON line per encoder, then a summary.

``push``: roborl/Push-v0 in ``proprio+pixels`` mode with the 20 demos of demos/push_pixels, one run per
(row, seed), one at a time, through the real runner (:class:`roborl.runners.off_policy.OffPolicyRunner`).
Rows: ``recipe`` (configs/pixels_push.yaml: encoder pretrained on the demo frames at startup, contrastive
then BC, frozen; residual SAC over a BC base), ``bc_pixels`` (that config's BC base alone after pretraining, no RL) and
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
        sampler = Sampler(st, build(SamplerConfig, {}), device=args.device, seed=0)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        weights = Path(tmp) / "enc.safetensors"
        E.save_encoder(weights, E.PixelEncoder(spec, downsample=args.downsample))
        for mode in args.modes:
            for prec in args.precisions:
                enc = {"weights": str(weights)} if mode == "frozen" else {}
                enc["downsample"] = args.downsample
                cfg = build(SACConfig, {"batch_size": args.batch, "precision": prec, "encoder": enc})
                # state: the same SAC on the proprio leaf alone (the speed the frozen path aims at).
                sac = SAC({"proprio": (9,)} if mode == "state" else spec, 4, cfg, args.device)
                torch.manual_seed(0)
                if mode == "frozen":  # fill the cache once, as the run's first updates would
                    for _ in range(max(2, 4 * args.rows // args.batch)):
                        sac.update(sampler.sample(args.batch, gamma=0.99))
                else:
                    for _ in range(3 if args.device != "cpu" else 1):  # CUDA: kernels, allocator, autotuning
                        sac.update(sampler.sample(args.batch, gamma=0.99))
                sync()
                t0 = time.perf_counter()
                t_sample = 0.0
                for _ in range(args.iters):
                    s0 = time.perf_counter()
                    b = sampler.sample(args.batch, gamma=0.99)
                    t_sample += time.perf_counter() - s0
                    sac.update(b)
                sync()
                dt = time.perf_counter() - t0
                print(json.dumps({"part": "throughput", "mode": mode, "precision": prec, "batch": args.batch,
                                  "downsample": args.downsample,
                                  "cameras": 2, "size": args.size, "iters": args.iters,
                                  "updates_per_s": round(args.iters / dt, 3),
                                  "ms_per_update": round(1000 * dt / args.iters, 1),
                                  "ms_sample": round(1000 * t_sample / args.iters, 1),
                                  "threads": args.threads, "device": args.device}), flush=True)


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
                pre = {"objective": m.get("objective"), "arch": m.get("arch", "conv"), "bc_loss": m.get("train_bc_loss"),
                       "recon_loss": m.get("train_recon_loss"), "best_step": m.get("best_step"),
                       "seconds": m.get("seconds")}
            rec_enc = cfg.sac.encoder
            enc_info = {"weights": rec_enc.weights, "arch": rec_enc.arch, "feature_dim": rec_enc.feature_dim}
            rec = {"row": row, "seed": s, "held_out_success": ev["success"], "curve_20eps": curve,
                   "train_wall_s": round(train_s, 1), "eval_wall_s": round(time.time() - t, 1),
                   "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
                   "encoder_pretrain": pre, "encoder": enc_info if enc.is_file() or cfg.sac.encoder.weights else None,
                   "overrides": list(args.override), "n_failures": len(ev["failures"]), "failures": ev["failures"][:10]}
            per_seed.append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
        succ = [p["held_out_success"] for p in per_seed]
        summary["rows"][row] = {"per_seed": per_seed, "mean": float(np.mean(succ)), "min": float(np.min(succ)),
                                "max": float(np.max(succ))}
    print(json.dumps(summary), flush=True)


PROBE_FIT_SEED, PROBE_TEST_SEED = 30_000, 40_000  # probe episodes: disjoint from training, in-run eval and held-out


def probe_frames(episodes: int, seed: int, every: int, noise: float, size: int = 64) -> dict:
    """Frames of noisy scripted-expert Push episodes in ``proprio+pixels`` mode, one every ``every`` steps.

    Returns ``{"obs": {leaf: [N, ...]}, "label": [N, 4] (cube xy, goal xy in m), "episode": [N]}``. The
    labels are read from the sim (``task_state``) for EVALUATION only: no encoder ever trains on them.
    """
    from roborl.envs.config import EnvConfig, build_env
    from roborl.envs.expert import expert as make_expert

    env_cfg = EnvConfig(id="roborl/Push-v0", kwargs={"obs_mode": "proprio+pixels", "image_size": size,
                                                    "cameras": ["front", "wrist"]})
    env = build_env(env_cfg, seed=seed, eval=True)
    obs_l: dict[str, list] = {}
    labels, eps = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        exp = make_expert(env, noise=noise, seed=seed + i)
        exp.reset()
        t, done = 0, False
        while not done:
            if t % every == 0:
                for k, v in (("proprio", obs["proprio"]), ("pixels.front", obs["pixels"]["front"]),
                             ("pixels.wrist", obs["pixels"]["wrist"])):
                    obs_l.setdefault(k, []).append(np.array(v))
                st = env.unwrapped.task_state()
                labels.append(np.concatenate([np.asarray(st["object"])[:2], np.asarray(st["goal"])[:2]]))
                eps.append(i)
            obs, _, term, trunc, _ = env.step(exp(obs))
            done, t = term or trunc, t + 1
    env.close()
    return {"obs": {k: np.stack(v) for k, v in obs_l.items()}, "label": np.stack(labels).astype(np.float64),
            "episode": np.array(eps)}


def ridge_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                groups: np.ndarray, lambdas: tuple = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)) -> dict:
    """Ridge regression ``y = [x, 1] W``; features standardised on the fit set; lambda by 5-fold
    cross-validation over fit EPISODES (``groups``). Returns RMSE in cm of the cube and goal positions
    (root mean squared xy distance) on the test set."""
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6

    def fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
        xa = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)
        reg = lam * np.eye(xa.shape[1])
        reg[-1, -1] = 0.0
        return np.linalg.solve(xa.T @ xa + reg, xa.T @ y)

    def pred(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1) @ w

    folds = np.unique(groups) % 5
    fold_of = dict(zip(np.unique(groups), folds))
    g = np.array([fold_of[e] for e in groups])
    cv = {}
    for lam in lambdas:
        err = 0.0
        for f in range(5):
            tr, va = g != f, g == f
            err += float(((pred(x_fit[va], fit(x_fit[tr], y_fit[tr], lam)) - y_fit[va]) ** 2).sum())
        cv[lam] = err
    lam = min(cv, key=cv.get)  # type: ignore[arg-type]
    e = pred(x_test, fit(x_fit, y_fit, lam)) - y_test
    e_fit = pred(x_fit, fit(x_fit, y_fit, lam)) - y_fit
    rm = lambda d: round(float(np.sqrt((d ** 2).sum(1).mean())) * 100, 2)  # noqa: E731  m -> cm
    return {"cube_rmse_cm": rm(e[:, 0:2]), "goal_rmse_cm": rm(e[:, 2:4]), "fit_cube_rmse_cm": rm(e_fit[:, 0:2]),
            "fit_goal_rmse_cm": rm(e_fit[:, 2:4]), "lambda": lam, "features": int(x_fit.shape[1])}


def part_probe(args: argparse.Namespace) -> None:
    """Linear probe: how well a frozen encoder's embedding (+ proprio) locates the cube and the goal in
    scenes it never saw. Ridge fit on ``--probe-fit`` episodes, RMSE on ``--probe-test`` other episodes."""
    import os

    from roborl.learners import encoders as E

    torch.set_num_threads(args.threads)
    cache = Path(args.probe_cache) if args.probe_cache else None
    key = f"{args.probe_fit}-{args.probe_test}-{args.probe_every}-{args.probe_noise}-{args.size}"
    if cache is not None and cache.is_file() and str(np.load(cache, allow_pickle=True)["key"]) == key:
        z = np.load(cache, allow_pickle=True)
        fit_d, test_d = z["fit"].item(), z["test"].item()
    else:
        t = time.time()
        fit_d = probe_frames(args.probe_fit, PROBE_FIT_SEED, args.probe_every, args.probe_noise, args.size)
        test_d = probe_frames(args.probe_test, PROBE_TEST_SEED, args.probe_every, args.probe_noise, args.size)
        print(json.dumps({"part": "probe", "rendered_frames": len(fit_d["label"]) + len(test_d["label"]),
                          "render_s": round(time.time() - t, 1)}), flush=True)
        if cache is not None:
            np.savez(cache, fit=np.array(fit_d, dtype=object), test=np.array(test_d, dtype=object), key=key)
    y_fit, y_test = fit_d["label"], test_d["label"]
    rows = {"mean": (np.zeros((len(y_fit), 0)), np.zeros((len(y_test), 0))),
            "proprio": (fit_d["obs"]["proprio"], test_d["obs"]["proprio"])}
    spread = {"label_std_cm": [round(float(v) * 100, 2) for v in y_test.std(0)]}
    for spec in args.encoders:
        name, _, path = spec.partition("=")
        path = path or name
        enc = E.load_encoder(path, what=f"--encoders {name}")

        @torch.no_grad()
        def embed(d: dict) -> np.ndarray:
            out = []
            for i in range(0, len(d["label"]), 256):
                out.append(enc({k: torch.from_numpy(d["obs"][k][i:i + 256]) for k in enc.keys}).float().numpy())
            return np.concatenate(out)

        t = time.time()
        ef, et = embed(fit_d), embed(test_d)
        emb_s = time.time() - t
        rows[name] = (np.concatenate([ef, fit_d["obs"]["proprio"]], 1), np.concatenate([et, test_d["obs"]["proprio"]], 1))
        meta = E.read_encoder_meta(path)
        rows[name + "/meta"] = {"objective": meta.get("objective", "?"), "arch": meta.get("arch", "conv"),
                                "seconds": meta.get("seconds"), "embed_s": round(emb_s, 1)}  # type: ignore[assignment]
    out = {"part": "probe", "fit_frames": len(y_fit), "test_frames": len(y_test), "fit_episodes": args.probe_fit,
           "test_episodes": args.probe_test, **spread, "load_avg": [round(x, 2) for x in os.getloadavg()], "rows": {}}
    for name, v in rows.items():
        if name.endswith("/meta"):
            continue
        xf, xt = v  # type: ignore[misc]
        r = ridge_probe(xf, y_fit, xt, y_test, fit_d["episode"])
        r.update(rows.get(name + "/meta", {}))  # type: ignore[arg-type]
        out["rows"][name] = r
        print(json.dumps({"encoder": name, **r}), flush=True)
    print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["throughput", "push", "probe"], default="throughput")
    ap.add_argument("--encoders", nargs="*", default=[], help="probe: NAME=PATH encoder files to probe")
    ap.add_argument("--probe-fit", type=int, default=40, help="probe: episodes to fit the ridge on")
    ap.add_argument("--probe-test", type=int, default=20, help="probe: other episodes to measure it on")
    ap.add_argument("--probe-every", type=int, default=4, help="probe: keep one frame every this many steps")
    ap.add_argument("--probe-noise", type=float, default=0.3, help="probe: scripted expert's action noise")
    ap.add_argument("--probe-cache", default=None, help="probe: .npz to keep the rendered frames in (reused)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="push: run seeds")
    ap.add_argument("--steps", type=int, default=30_000, help="push: env steps per run")
    ap.add_argument("--eval-every", type=int, default=None, help="push: in-run eval period (default steps / 6)")
    ap.add_argument("--eval-episodes", type=int, default=100, help="push: held-out episodes per run")
    ap.add_argument("--variants", nargs="*", default=None, help=f"push: subset of {list(PUSH_ROWS)}")
    ap.add_argument("--override", nargs="*", default=[], help="push: extra key=value config overrides")
    ap.add_argument("--out-dir", default=None, help="push: where the run dirs go (default: a temp dir)")
    ap.add_argument("--quiet", action="store_true", help="push: no progress lines")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=64, help="throughput, probe: camera image size")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="throughput: cpu or cuda (the learner and the sampler's mirror)")
    ap.add_argument("--modes", nargs="*", default=["state", "e2e", "frozen"], help="throughput: subset of state e2e frozen")
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], help="throughput: subset of fp32 bf16")
    ap.add_argument("--downsample", type=int, default=1, help="throughput: stride-2 conv layers of the encoder")
    args = ap.parse_args()
    {"push": part_push, "probe": part_probe, "throughput": throughput}[args.part](args)


if __name__ == "__main__":
    main()
