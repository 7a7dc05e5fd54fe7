"""Pixel SAC throughput: sample + augment + update per second, end to end vs frozen encoder, fp32 vs bf16.

    python tools/bench_pixels.py --part throughput [--batch 256] [--size 64] [--iters 5] [--threads 1]

A real ReplayStore on disk (two 64x64 cameras + proprio, random frames) and the real Sampler feed
``SAC.update``; ``frozen`` loads a saved encoder (``sac.encoder.weights``), whose embedding cache
fills during the warm-up pass over the store's rows, as it would during a run. Prints one JSON line
per setting.
"""
from __future__ import annotations

import argparse
import json
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
        E.save_encoder(weights, E.PixelEncoder(spec))
        for mode in ("state", "e2e", "frozen"):
            for prec in ("fp32", "bf16"):
                enc = {"weights": str(weights)} if mode == "frozen" else {}
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
                                  "cameras": 2, "size": args.size, "iters": args.iters,
                                  "updates_per_s": round(args.iters / dt, 3),
                                  "ms_per_update": round(1000 * dt / args.iters, 1),
                                  "ms_sample": round(1000 * t_sample / args.iters, 1),
                                  "threads": args.threads}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["throughput"], default="throughput")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    throughput(ap.parse_args())


if __name__ == "__main__":
    main()
