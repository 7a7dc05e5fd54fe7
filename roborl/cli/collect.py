"""`roborl collect`: run a policy in an env and record its episodes into a replay store."""
from __future__ import annotations

import argparse
import time

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
  roborl collect --env roborl/Push-v0 --policy scripted --store demos/push_pix --episodes 20 env.kwargs.obs_mode=proprio+pixels
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
    p.add_argument("overrides", nargs="*", help="env.* key=value overrides, as for roborl train "
                                                 "(e.g. env.kwargs.obs_mode=proprio+pixels env.dr.enabled=false).")
    p.add_argument("--terminate-on-success", action="store_true",
                   help="End each episode at its first success (env.terminate_on_success), as the runs that use the demos do.")


def run(args: argparse.Namespace) -> int:
    from roborl.errors import UsageError
    from roborl.runners.collect import build_collect_env, collect_policy, env_section, record_episodes
    from roborl.runs import progress
    from roborl.store.store import ReplayStore

    if args.episodes < 1:
        raise UsageError(f"--episodes: expected >= 1, got {args.episodes}")
    over = env_section(list(args.overrides)).get("env", {})
    env = build_collect_env(args.env, args.seed, args.max_episode_steps, args.terminate_on_success, over)
    try:
        store = ReplayStore.open_or_create(args.store, env_id=args.env, observation_space=env.observation_space,
                                           action_space=env.action_space)
        try:
            done = store.total_episodes(args.partition)
            if done >= args.episodes:
                print(f"{args.store}: {args.partition} already holds {done} episodes (>= {args.episodes}); nothing to do")
                return 0
            act = collect_policy(args.policy, env, noise=args.noise, seed=args.seed, device=args.device)
            t0 = time.time()
            bar = progress(total=args.episodes, initial=done, desc=f"collect {args.partition}")
            res = record_episodes(env, store, act, episodes=args.episodes, partition=args.partition, seed=args.seed,
                                  on_episode=lambda: bar.update(1))
            bar.close()
            n, steps = res.episodes, res.steps
            print(f"collected {n} episodes ({steps} steps, {steps / max(1e-9, time.time() - t0):.0f} steps/s) into "
                  f"{args.store} [{args.partition}]: success rate {res.successes / n:.2f} ({res.successes}/{n}); "
                  f"partition now holds {store.num_episodes(args.partition)} episodes")
        finally:
            store.close()
    finally:
        env.close()
    return 0
