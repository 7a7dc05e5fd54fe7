"""`roborl collect`: run a policy in an env and record its episodes into a replay store."""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np

HELP = "Record episodes of a scripted expert, a checkpoint or a random policy into a replay store."
DESCRIPTION = """Record episodes into a replay store (created on first use, appended to afterwards).

--episodes is the number of episodes the partition should hold: a run that crashed or was
interrupted is resumed by running the same command again (episode i always uses seed
SEED + i, and an episode reaches the store only once it has ended, so a crash never leaves
a partial demo).

Examples:
  roborl collect --env roborl/Push-v0 --policy scripted --store demos/push --episodes 20 --noise 0.15
  roborl collect --env roborl/Push-v0 --policy runs/sac-push --store runs/sac-push/eval_store --episodes 10 --partition online
  roborl collect --env Pendulum-v1 --policy random --store /tmp/pendulum --episodes 5
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="Env id (gymnasium id, dmc:<domain>-<task>, robot://HOST:PORT).")
    p.add_argument("--policy", required=True,
                   help="'scripted' (roborl.envs.expert), 'random', or a checkpoint / run directory.")
    p.add_argument("--store", required=True, help="Store directory (created when missing).")
    p.add_argument("--episodes", type=int, required=True, help="Episodes the partition should hold when done.")
    p.add_argument("--partition", choices=["demo", "online"], default="demo", help="Partition to write.")
    p.add_argument("--noise", type=float, default=0.0,
                   help="Std of Gaussian action noise (scripted: the expert's noise, which also injects random actions).")
    p.add_argument("--seed", type=int, default=0, help="Episode i uses env seed SEED + i.")
    p.add_argument("--max-episode-steps", type=int, default=None, help="Override the env's time limit.")
    p.add_argument("--device", default="cpu", help="Device for a checkpoint policy.")
    p.add_argument("--terminate-on-success", action="store_true",
                   help="End each episode at its first success (env.terminate_on_success), as the runs that use the demos do.")


def _make_env(env_id: str, seed: int, max_steps: int | None, terminate_on_success: bool = False):
    from roborl.config import build
    from roborl.envs.config import EnvConfig, build_env

    cfg = build(EnvConfig, {"id": env_id, "terminate_on_success": terminate_on_success,
                            **({"max_episode_steps": max_steps} if max_steps else {})}, "command line")
    return build_env(cfg, seed=seed)


def _policy(args: argparse.Namespace, env: Any) -> Callable[[Any, int], np.ndarray]:
    """``act(obs, episode_index) -> action``; reset per episode is folded in (episode index changes)."""
    from roborl.errors import UsageError

    if args.noise < 0:
        raise UsageError(f"--noise: expected >= 0, got {args.noise}")
    if args.policy == "scripted":
        from roborl.envs import expert as expert_mod

        make_expert = getattr(expert_mod, "expert", expert_mod)
        state: dict[str, Any] = {"ep": None, "exp": None}

        def act(obs: Any, ep: int) -> np.ndarray:
            if state["ep"] != ep:  # a fresh, seeded expert per episode: resumed runs repeat exactly
                state["exp"] = make_expert(env, noise=args.noise, seed=args.seed + ep)
                state["exp"].reset()
                state["ep"] = ep
            return state["exp"](obs)
        return act
    if args.policy == "random":
        rngs: dict[int, Any] = {}

        def act(obs: Any, ep: int) -> np.ndarray:
            if ep not in rngs:
                rngs.clear()
                env.action_space.seed(args.seed + ep)
                rngs[ep] = True
            return env.action_space.sample()
        return act
    from roborl.checkpoint import load_checkpoint
    from roborl.learners import load_policy

    state, meta, _ = load_checkpoint(args.policy)
    pol = load_policy(state, meta, args.device)
    rng = np.random.default_rng(args.seed)
    low = getattr(env.action_space, "low", -1.0)
    high = getattr(env.action_space, "high", 1.0)

    def act(obs: Any, ep: int) -> np.ndarray:
        a = np.asarray(pol.act(np.asarray(obs, np.float32)[None], deterministic=True))[0]
        if args.noise > 0:
            a = np.clip(a + rng.normal(0.0, args.noise, a.shape), low, high)
        return a
    return act


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError
    from roborl.runs import progress
    from roborl.store.store import ReplayStore

    if args.episodes < 1:
        raise UsageError(f"--episodes: expected >= 1, got {args.episodes}")
    env = _make_env(args.env, args.seed, args.max_episode_steps, args.terminate_on_success)
    try:
        store = ReplayStore.open_or_create(args.store, env_id=args.env, observation_space=env.observation_space,
                                           action_space=env.action_space)
        try:
            done = store.total_episodes(args.partition)
            if done >= args.episodes:
                print(f"{args.store}: {args.partition} already holds {done} episodes (>= {args.episodes}); nothing to do")
                return 0
            act = _policy(args, env)
            successes = steps = 0
            t0 = time.time()
            bar = progress(total=args.episodes, initial=done, desc=f"collect {args.partition}")
            for ep in range(done, args.episodes):
                obs, info = env.reset(seed=args.seed + ep)
                # Buffered: the episode reaches the store only when it ends (a crash drops it
                # whole and the rerun repeats it with the same seed).
                store.start_episode(obs, args.partition, buffered=True)
                success = False
                while True:
                    a = act(obs, ep)
                    obs, r, term, trunc, info = env.step(a)
                    ok = bool(info.get("is_success", False))
                    success |= ok
                    ex = info.get("executed_action")
                    store.add_step(action=a, executed_action=a if ex is None else ex, reward=float(r), next_obs=obs,
                                   terminated=bool(term), truncated=bool(trunc), is_success=ok)
                    steps += 1
                    if term or trunc:
                        break
                successes += success
                bar.update(1)
            bar.close()
            n = args.episodes - done
            print(f"collected {n} episodes ({steps} steps, {steps / max(1e-9, time.time() - t0):.0f} steps/s) into "
                  f"{args.store} [{args.partition}]: success rate {successes / n:.2f} ({successes}/{n}); "
                  f"partition now holds {store.num_episodes(args.partition)} episodes")
        finally:
            store.close()
    finally:
        env.close()
    return 0
