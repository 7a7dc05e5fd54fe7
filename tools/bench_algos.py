"""Algorithm-family benchmark: our TD3 / DDPG against stable-baselines3's on the same short budget.

Prints one JSON object. Not a CI test. Both sides get the same env (gymnasium Pendulum-v1), networks
(``--hidden``), batch, learning rates, warmup, Gaussian exploration noise 0.1, tau 0.005, gamma 0.99,
one update per env step, one thread; each trained policy is evaluated deterministically on the same
``--eval-episodes`` reset seeds. Ours runs through the real off-policy runner (store on disk, eval, checkpoints).

Example:
    python tools/bench_algos.py --algos td3 ddpg --seeds 0 --steps 4000
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
sys.path.insert(0, str(REPO))

EVAL_SEED = 10_000


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, cuda={torch.cuda.is_available()}"


def ours(algo: str, seed: int, steps: int, hidden: list[int], batch: int, lr: float, warmup: int, episodes: int) -> dict:
    from roborl import config as C
    from roborl.eval.episodes import run_episodes
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner

    with tempfile.TemporaryDirectory() as tmp:
        cfg = C.load(RunConfig, None, [
            "env.id=Pendulum-v1", f"run.dir={tmp}", f"run.seed={seed}", f"train.algo={algo}", f"train.total_steps={steps}",
            "train.eval_every=0", "train.eval_episodes=1", f"train.checkpoint_every={steps}", "train.log_every=1000",
            "store.sampler.demo_fraction=0", "store.sampler.kind=uniform", f"{algo}.hidden={hidden}",
            f"{algo}.batch_size={batch}", f"{algo}.actor_lr={lr}", f"{algo}.critic_lr={lr}", f"{algo}.warmup_steps={warmup}"])
        t0 = time.time()
        runner = OffPolicyRunner(cfg, Path(tmp))
        runner.train(quiet=True)
        wall = time.time() - t0
        res = run_episodes(runner.learner.as_policy(), cfg.env, episodes, seed=EVAL_SEED)
        runner.close()
    return {"return": round(float(res.return_mean), 1), "wall_s": round(wall, 1)}


def sb3(algo: str, seed: int, steps: int, hidden: list[int], batch: int, lr: float, warmup: int, episodes: int) -> dict:
    import gymnasium as gym

    try:
        from stable_baselines3 import DDPG, TD3
    except ImportError:
        print("bench_algos: the SB3 side needs stable-baselines3 (pip install stable-baselines3), or pass --sides ours",
              file=sys.stderr)
        raise SystemExit(2) from None
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make("Pendulum-v1")
    act = env.action_space
    # Our noise std 0.1 is on actions scaled to [-1, 1]; SB3 adds its noise on the same scaled actions.
    noise = NormalActionNoise(np.zeros(act.shape), 0.1 * np.ones(act.shape))
    cls = {"td3": TD3, "ddpg": DDPG}[algo]
    t0 = time.time()
    model = cls("MlpPolicy", env, learning_rate=lr, buffer_size=100_000, learning_starts=warmup, batch_size=batch,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, action_noise=noise,
                policy_kwargs={"net_arch": list(hidden)}, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=steps)
    wall = time.time() - t0
    rets = []
    eval_env = gym.make("Pendulum-v1")
    for i in range(episodes):
        obs, _ = eval_env.reset(seed=EVAL_SEED + i)
        done, total = False, 0.0
        while not done:
            a, _ = model.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = eval_env.step(a)
            total += float(r)
            done = term or trunc
        rets.append(total)
    return {"return": round(float(np.mean(rets)), 1), "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", nargs="+", default=["td3", "ddpg"], choices=["td3", "ddpg"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--hidden", nargs="+", type=int, default=[64, 64])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--sides", nargs="+", default=["ours", "sb3"], choices=["ours", "sb3"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"machine": _machine(), "env": "Pendulum-v1", "steps": a.steps, "hidden": a.hidden, "batch": a.batch,
                 "lr": a.lr, "warmup": a.warmup, "eval_episodes": a.eval_episodes, "results": {}}
    for algo in a.algos:
        for side in a.sides:
            fn = ours if side == "ours" else sb3
            rows = [fn(algo, s, a.steps, a.hidden, a.batch, a.lr, a.warmup, a.eval_episodes) for s in a.seeds]
            out["results"][f"{algo}/{side}"] = {"seeds": a.seeds, "returns": [r["return"] for r in rows],
                                                "return_mean": round(float(np.mean([r["return"] for r in rows])), 1),
                                                "wall_s": [r["wall_s"] for r in rows]}
            print(json.dumps({algo: side, **out["results"][f"{algo}/{side}"]}), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
