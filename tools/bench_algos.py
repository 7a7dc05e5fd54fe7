"""Algorithm-family benchmark: each of our learners against its peer on the same budget, side by side.

Pairs (``--pairs``; the original TD3/DDPG pair keeps its ``--algos`` form below):
  a2c          our A2C vs SB3 A2C            (InvertedPendulum-v5, on-policy runner)
  trpo         our TRPO vs sb3-contrib TRPO  (InvertedPendulum-v5, on-policy runner)
  sac_discrete our discrete SAC vs SB3 DQN   (CartPole-v1, off-policy runner)
  sac_discrete_reach
               our discrete SAC (configs/sac_discrete_reach.yaml: HER) and the same without HER vs SB3 DQN, on
               roborl/Reach-v0 with env.action_bins=3 (81 actions); success rate on held-out episodes
  mbpo         our MBPO vs our SAC           (InvertedPendulum-v5, eval curve: env steps MBPO needs to
               reach SAC's final return)
Both sides of a pair get the same env, env steps, network sizes and (where they exist) hyperparameters;
every trained policy is evaluated deterministically on the same ``--eval-episodes`` reset seeds.

Example:
    python tools/bench_algos.py --pairs a2c trpo --seeds 0 1 2 --steps 20000

Prints one JSON object. Not a CI test. Both sides get the same env (``--env``, default Pendulum-v1), networks
(``--hidden``), batch, learning rates, warmup, Gaussian exploration noise 0.1, tau 0.005, gamma 0.99,
one update per env step, one thread; each trained policy is evaluated deterministically on the same
``--eval-episodes`` reset seeds. Ours runs through the real off-policy runner (store on disk, eval, checkpoints).

Example:
    python tools/bench_algos.py --algos td3 ddpg --seeds 0 --steps 4000
    python tools/bench_algos.py --algos td3 --sides ours --env HalfCheetah-v5 --steps 100000 \\
        --hidden 256 256 --batch 256 --warmup 10000
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


def ours(algo: str, seed: int, steps: int, hidden: list[int], batch: int, lr: float, warmup: int, episodes: int,
         env_id: str = "Pendulum-v1") -> dict:
    from roborl import config as C
    from roborl.eval.episodes import run_episodes
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner

    with tempfile.TemporaryDirectory() as tmp:
        cfg = C.load(RunConfig, None, [
            f"env.id={env_id}", f"run.dir={tmp}", f"run.seed={seed}", f"train.algo={algo}", f"train.total_steps={steps}",
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


def sb3(algo: str, seed: int, steps: int, hidden: list[int], batch: int, lr: float, warmup: int, episodes: int,
        env_id: str = "Pendulum-v1") -> dict:
    import gymnasium as gym

    try:
        from stable_baselines3 import DDPG, TD3
    except ImportError:
        print("bench_algos: the SB3 side needs stable-baselines3 (pip install 'roborl[bench]'), or pass --sides ours",
              file=sys.stderr)
        raise SystemExit(2) from None
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make(env_id)
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
    eval_env = gym.make(env_id)
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


# ============================================================================= the matrix (--pairs)

def _eval_gym(predict, env_id: str, episodes: int) -> float:
    """Mean deterministic return of ``predict(obs) -> action`` on ``env_id`` (episode i reset with EVAL_SEED + i)."""
    import gymnasium as gym

    env = gym.make(env_id)
    rets = []
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(predict(obs))
            total += float(r)
            done = term or trunc
        rets.append(total)
    env.close()
    return float(np.mean(rets))


def _ours_train(algo: str, env_id: str, seed: int, steps: int, over: list[str], episodes: int,
                eval_every: int = 0) -> dict:
    """Train with ``roborl train``'s runner for ``algo`` in a temp dir; eval like ``roborl eval``."""
    from roborl import config as C
    from roborl.checkpoint import find_checkpoint, load_checkpoint
    from roborl.eval.episodes import run_episodes
    from roborl.learners import LEARNERS, load_policy
    from roborl.runners.config import RunConfig
    from roborl.runs import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        cfg = C.load(RunConfig, None, [
            f"env.id={env_id}", f"run.dir={tmp}", f"run.seed={seed}", f"train.algo={algo}", f"train.total_steps={steps}",
            f"train.eval_every={eval_every}", f"train.eval_episodes={5 if eval_every else 1}",
            f"train.checkpoint_every={steps}",
            "train.log_every=1000", "train.log_every_s=0", "device=cpu", *over])
        t0 = time.time()
        if LEARNERS[algo].kind == "on_policy":
            import contextlib

            from roborl.runners.on_policy import run

            with contextlib.redirect_stdout(sys.stderr):  # the runner's final line; stdout is the JSON only
                run(cfg, Path(tmp), "local", None)
        else:
            from roborl.runners.off_policy import OffPolicyRunner

            runner = OffPolicyRunner(cfg, Path(tmp))
            runner.train(quiet=True)
            runner.close()
        wall = time.time() - t0
        state, meta, _ = load_checkpoint(find_checkpoint(Path(tmp)))
        res = run_episodes(load_policy(state, meta), cfg.env, episodes, seed=EVAL_SEED)
        curve = [(r["step"], r["eval/return"]) for r in read_metrics(tmp) if "eval/return" in r]
    return {"return": round(float(res.return_mean), 1), "wall_s": round(wall, 1), "curve": curve,
            "success": round(float(res.success_rate), 3)}


def _sb3_train(kind: str, env_id: str, seed: int, steps: int, hidden: list[int], episodes: int) -> dict:
    import gymnasium as gym

    try:
        from stable_baselines3 import A2C, DQN
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        print("bench_algos: the peer side needs stable-baselines3 (pip install 'roborl[bench]')", file=sys.stderr)
        raise SystemExit(2) from None
    t0 = time.time()
    if kind == "a2c":  # SB3 defaults (RMSprop, n_steps 5), 8 envs as ours
        model = A2C("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), seed=seed, device="cpu",
                    policy_kwargs={"net_arch": list(hidden)}, verbose=0)
    elif kind == "trpo":
        try:
            from sb3_contrib import TRPO
        except ImportError:
            print("bench_algos: the trpo peer needs sb3-contrib (pip install 'roborl[bench]')", file=sys.stderr)
            raise SystemExit(2) from None
        # sb3-contrib defaults (n_steps 2048 on one env, batch 128, KL 0.01, 15 CG steps, damping 0.1);
        # 8 envs x 256 steps = the same 2048-step batch as ours.
        model = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), n_steps=256, seed=seed, device="cpu",
                     policy_kwargs={"net_arch": list(hidden)}, verbose=0)
    elif kind == "dqn":  # rl-zoo's CartPole DQN settings, on the same budget
        model = DQN("MlpPolicy", gym.make(env_id), learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                    learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                    exploration_fraction=0.16, exploration_final_eps=0.04, seed=seed, device="cpu",
                    policy_kwargs={"net_arch": list(hidden)}, verbose=0)
    else:
        raise ValueError(kind)
    model.learn(total_timesteps=steps)
    wall = time.time() - t0
    ret = _eval_gym(lambda o: model.predict(o, deterministic=True)[0], env_id, episodes)
    return {"return": round(ret, 1), "wall_s": round(wall, 1)}


def _sb3_dqn_arm(env_cfg_over: list[str], seed: int, steps: int, hidden: list[int], episodes: int) -> dict:
    """SB3 DQN on the env that ``env.*`` overrides build (roborl's own stack, discretised actions),
    evaluated like ours: ``run_episodes`` on the same eval seeds, success from the env's flag."""
    from roborl import config as C
    from roborl.envs.config import build_env
    from roborl.eval.episodes import run_episodes
    from roborl.runners.config import RunConfig

    try:
        from stable_baselines3 import DQN
    except ImportError:
        print("bench_algos: the peer side needs stable-baselines3 (pip install 'roborl[bench]')", file=sys.stderr)
        raise SystemExit(2) from None
    cfg = C.load(RunConfig, None, env_cfg_over)
    t0 = time.time()
    # SB3's DQN defaults for a goal-reaching task (rl-zoo's defaults, one update every 4 steps), with
    # gamma as ours; no HER (SB3's HER buffer needs a Dict GoalEnv; Reach is flat).
    model = DQN("MlpPolicy", build_env(cfg.env, seed=seed), learning_rate=1e-3, batch_size=256, buffer_size=100_000,
                learning_starts=1000, gamma=0.95, target_update_interval=1000, train_freq=4, gradient_steps=1,
                exploration_fraction=0.3, exploration_final_eps=0.05, seed=seed, device="cpu",
                policy_kwargs={"net_arch": list(hidden)}, verbose=0)
    model.learn(total_timesteps=steps)
    wall = time.time() - t0

    class _Policy:
        def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
            return model.predict(obs, deterministic=True)[0]

    res = run_episodes(_Policy(), cfg.env, episodes, seed=EVAL_SEED)
    return {"return": round(float(res.return_mean), 1), "wall_s": round(wall, 1),
            "success": round(float(res.success_rate), 3)}


def _steps_to_reach(curve: list, target: float) -> int | None:
    """First eval step whose return >= target (None if never)."""
    return next((int(s) for s, r in curve if r >= target), None)


def run_pair(pair: str, seeds: list[int], steps: int, episodes: int, mbpo_steps: int | None,
             env: str | None = None) -> dict:
    h = [64, 64]
    sides: dict[str, list[dict]] = {}
    if pair in ("a2c", "trpo"):
        env_id = env or "InvertedPendulum-v5"
        over = [f"{pair}.hidden={h}", f"{pair}.torch_threads=1", f"{pair}.n_envs=8"]
        if pair == "trpo":
            over += ["trpo.rollout_steps=256"]
        sides[f"{pair}/ours"] = [_ours_train(pair, env_id, s, steps, over, episodes) for s in seeds]
        sides[f"{pair}/peer"] = [_sb3_train(pair, env_id, s, steps, h, episodes) for s in seeds]
    elif pair == "sac_discrete":
        env_id = "CartPole-v1"
        over = [f"sac_discrete.hidden={h}", "sac_discrete.batch_size=64", "sac_discrete.warmup_steps=1000",
                "store.sampler.demo_fraction=0", "train.threads=1"]
        sides["sac_discrete/ours"] = [_ours_train("sac_discrete", env_id, s, steps, over, episodes) for s in seeds]
        sides["sac_discrete/peer_dqn"] = [_sb3_train("dqn", env_id, s, steps, h, episodes) for s in seeds]
    elif pair == "sac_discrete_reach":
        env_id = "roborl/Reach-v0"
        h = [256, 256]
        env_over = [f"env.id={env_id}", "env.action_bins=3"]
        over = ["env.action_bins=3", "sac_discrete.hidden=[256, 256]", "sac_discrete.batch_size=256",
                "sac_discrete.gamma=0.95", "sac_discrete.reward_scale=10.0", "sac_discrete.init_alpha=0.1",
                "sac_discrete.warmup_steps=1000", "store.sampler.demo_fraction=0", "store.sampler.n_step=3",
                "train.threads=1"]
        every = max(1000, steps // 5)
        sides["sac_discrete_reach/ours_her"] = [
            _ours_train("sac_discrete", env_id, s, steps, over + ["store.sampler.her_fraction=0.5"], episodes, every)
            for s in seeds]
        sides["sac_discrete_reach/ours_no_her"] = [
            _ours_train("sac_discrete", env_id, s, steps, over + ["store.sampler.her_fraction=0"], episodes, every)
            for s in seeds]
        sides["sac_discrete_reach/peer_dqn"] = [_sb3_dqn_arm(env_over, s, steps, h, episodes) for s in seeds]
    elif pair == "mbpo":
        env_id = "InvertedPendulum-v5"
        n = mbpo_steps or steps
        sac = ["sac.hidden=[256, 256]", "sac.warmup_steps=500", "store.sampler.demo_fraction=0", "train.threads=1"]
        mb = ["mbpo.warmup_steps=500", "mbpo.utd=10", "mbpo.sac.hidden=[256, 256]", "mbpo.model_steps=200",
              "mbpo.rollout_batch=5000", "store.sampler.demo_fraction=0", "train.threads=1"]
        every = max(250, steps // 10)
        sides["mbpo/sac"] = [_ours_train("sac", env_id, s, steps, sac, episodes, eval_every=every) for s in seeds]
        sides["mbpo/ours"] = [_ours_train("mbpo", env_id, s, n, mb, episodes, eval_every=250) for s in seeds]
    else:
        raise ValueError(pair)
    out = {"env": env_id, "steps": steps}
    for name, rows in sides.items():
        rets = [r["return"] for r in rows]
        out[name] = {"seeds": seeds, "returns": rets, "return_mean": round(float(np.mean(rets)), 1),
                     "return_std": round(float(np.std(rets)), 1), "wall_s": [r["wall_s"] for r in rows],
                     "ms_per_env_step": round(1000 * float(np.mean([r["wall_s"] for r in rows])) /
                                              (mbpo_steps if name == "mbpo/ours" and mbpo_steps else steps), 2)}
        if "success" in rows[0] and pair == "sac_discrete_reach":  # the other pairs' envs have no success flag
            out[name]["success"] = [r["success"] for r in rows]
            out[name]["success_mean"] = round(float(np.mean(out[name]["success"])), 3)
        if "curve" in rows[0] and rows[0]["curve"]:
            out[name]["curves"] = [r["curve"] for r in rows]
    if pair == "mbpo":
        target = out["mbpo/sac"]["return_mean"]
        out["mbpo/steps_to_sac_final_return"] = [_steps_to_reach(r["curve"], target) for r in sides["mbpo/ours"]]
    return out


def main() -> None:
    if "--pairs" in sys.argv:
        ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("--pairs", nargs="+", required=True, choices=["a2c", "trpo", "sac_discrete", "sac_discrete_reach", "mbpo"])
        ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        ap.add_argument("--steps", type=int, default=20_000)
        ap.add_argument("--mbpo-steps", type=int, default=None, help="MBPO's env steps (default: --steps)")
        ap.add_argument("--eval-episodes", type=int, default=10)
        ap.add_argument("--env", default=None, help="MuJoCo env of the a2c/trpo pairs (default InvertedPendulum-v5)")
        a = ap.parse_args()
        torch.set_num_threads(1)
        out = {"machine": _machine(), "load_avg": os.getloadavg(), "steps": a.steps, "results": {}}
        for pair in a.pairs:
            out["results"][pair] = run_pair(pair, a.seeds, a.steps, a.eval_episodes, a.mbpo_steps, a.env)
            print(json.dumps({pair: out["results"][pair]}), file=sys.stderr, flush=True)
        out["load_avg_end"] = os.getloadavg()
        print(json.dumps(out))
        return
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
    ap.add_argument("--env", default="Pendulum-v1", help="gymnasium env id (e.g. HalfCheetah-v5)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"machine": _machine(), "load_avg": os.getloadavg(), "env": a.env, "steps": a.steps, "hidden": a.hidden, "batch": a.batch,
                 "lr": a.lr, "warmup": a.warmup, "eval_episodes": a.eval_episodes, "results": {}}
    for algo in a.algos:
        for side in a.sides:
            fn = ours if side == "ours" else sb3
            rows = [fn(algo, s, a.steps, a.hidden, a.batch, a.lr, a.warmup, a.eval_episodes, a.env) for s in a.seeds]
            out["results"][f"{algo}/{side}"] = {"seeds": a.seeds, "returns": [r["return"] for r in rows],
                                                "return_mean": round(float(np.mean([r["return"] for r in rows])), 1),
                                                "wall_s": [r["wall_s"] for r in rows]}
            print(json.dumps({algo: side, **out["results"][f"{algo}/{side}"]}), file=sys.stderr, flush=True)
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
