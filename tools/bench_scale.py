"""Scale-out benchmarks; prints one JSON object.

``--part ppo``: data-parallel PPO env-steps/s at 1 and 2 (or ``--nproc``) processes, side by side
in one run: ``roborl train CONFIG --nproc N`` (torch's elastic launcher, gloo on CPU), the same
per-rank work at every N (``n_envs`` envs x ``rollout_steps`` per rank and iteration, ``--iters``
iterations), rounds interleaved (1, 2, 1, 2, ...) so every N sees the same machine load. The
figure is rank 0's logged ``fps`` of the last row (env steps of all ranks per second of the
training loop, start-up excluded); wall seconds of the whole command (start-up, launch and final
eval included) are reported too. Scaling efficiency = fps(N) / (N * fps(1)).

    python tools/bench_scale.py --part ppo
    python tools/bench_scale.py --part ppo --env HalfCheetah-v5 --n-envs 4 --rollout-steps 256 --iters 4 --rounds 2

``--part fleet``: ``--actors`` sim actors (``roborl train --role actor``, each its own process, run
dir and ``--actor-id``) into one learner (``--role learner``) on 127.0.0.1, exactly once. The
learner does not update by default (``sac.warmup_steps`` above the budget: the figure is the
transport + store path; ``--learn`` turns SAC updates on). Reported: rows/s stored by the learner
(from its metric rows: stored rows over the learner's wall time between the first and the last
row), each actor's env steps/s over its loop (stepping, local store, pushes, final drain), and
the check that the learner's rows equal the sum of the actors' committed rows, per actor.

    python tools/bench_scale.py --part fleet
    python tools/bench_scale.py --part fleet --actors 1 4 --steps 20000 --env Pendulum-v1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ppo_run(nproc: int, args: argparse.Namespace, tmp: Path, tag: str) -> dict[str, float]:
    run_dir = tmp / tag
    per_iter = args.n_envs * args.rollout_steps * nproc
    total = per_iter * args.iters
    cfg = tmp / "cfg.yaml"
    cfg.write_text(f"""run: {{name: scale, seed: 0}}
device: cpu
env: {{id: {args.env}}}
train: {{algo: ppo, total_steps: {total}, eval_every: 0, eval_episodes: 1, checkpoint_every: {10 * total},
        log_every: {total}}}
ppo: {{n_envs: {args.n_envs}, rollout_steps: {args.rollout_steps}, epochs: {args.epochs},
      minibatch_size: {args.minibatch}, hidden: [64, 64], torch_threads: 1}}
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "roborl", "--quiet", "train", str(cfg), f"run.dir={run_dir}",
                        "--nproc", str(nproc)], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench_scale: nproc {nproc} failed: {p.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    fps = [r["fps"] for r in rows if "fps" in r][-1]
    return {"fps": fps, "wall_s": wall, "env_steps": total}


def part_ppo(args: argparse.Namespace) -> dict:
    res: dict[int, list[dict[str, float]]] = {n: [] for n in args.nproc}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(args.rounds):
            for n in args.nproc:
                res[n].append(_ppo_run(n, args, tmp, f"r{r}_n{n}"))
    med = {n: statistics.median(x["fps"] for x in v) for n, v in res.items()}
    base = med[args.nproc[0]] if args.nproc[0] == 1 else None
    return {
        "part": "ppo", "env": args.env, "per_rank": {"n_envs": args.n_envs, "rollout_steps": args.rollout_steps,
                                                    "epochs": args.epochs, "minibatch": args.minibatch,
                                                    "iters": args.iters},
        "cpus": os.cpu_count(), "rounds": args.rounds,
        "results": {str(n): {"env_steps_per_s_median": med[n], "runs": v,
                             **({"speedup": med[n] / base, "scaling_efficiency": med[n] / (n * base)} if base else {})}
                    for n, v in res.items()},
    }


def fleet_breakdown(env_id: str, rows: int = 6000) -> dict[str, float]:
    """Where an actor's and the learner's time goes, per row, in this process (microseconds):
    the raw env step, the actor's env_step into its local store, its read + encode of a push, the
    learner's decode and its ingest into a store stream (add_steps per episode segment)."""
    import gymnasium as gym
    import numpy as np

    from roborl.envs.step import env_step
    from roborl.robots.transport import decode, encode
    from roborl.runners import distributed as D
    from roborl.store.store import ReplayStore

    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        env = gym.make(env_id)
        spaces = dict(observation_space=env.observation_space, action_space=env.action_space)
        st = ReplayStore.create(Path(d) / "actor", env_id=env_id, **spaces)
        act = lambda: rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)  # noqa: E731
        env.reset(seed=0)
        t = time.perf_counter()
        for _ in range(rows):
            _, _, te, tr, _ = env.step(act())
            if te or tr:
                env.reset()
        out["env_step_raw"] = (time.perf_counter() - t) / rows
        obs, _ = env.reset(seed=0)
        st.start_episode(obs)
        t = time.perf_counter()
        for _ in range(rows):
            s = env_step(env, obs, act(), sink=st)
            obs = s.next_obs
            if s.done:
                obs, _ = env.reset()
                st.start_episode(obs)
        out["actor_env_step_into_store"] = (time.perf_counter() - t) / rows
        st.end_episode()
        st.commit()
        link = D.ActorLink.__new__(D.ActorLink)
        link.store = st
        t = time.perf_counter()
        frames = []
        for a in range(0, rows, 1024):
            b = min(rows, a + 1024)
            arr = link._stream_arrays(st.read_rows("online", a, b, fields=link._fields()))
            arr["first"] = D.episode_starts(st, a, b)
            frames.append(encode({"type": "push", "seq": 1}, arr))
        out["actor_read_encode_push"] = (time.perf_counter() - t) / rows
        t = time.perf_counter()
        msgs = [decode(f) for f in frames]
        out["learner_decode"] = (time.perf_counter() - t) / rows
        lst = ReplayStore.create(Path(d) / "learner", env_id=env_id, **spaces)
        sink = D.TransitionSink(lst)
        upto = D.ended_upto(st)
        t = time.perf_counter()
        for i, m in enumerate(msgs):
            sink.ingest("x", i * 1024, m.arrays, upto)
        out["learner_ingest_store_stream"] = (time.perf_counter() - t) / rows
        assert lst.stream_rows("x") == rows
        lst.close()
        st.close()
        env.close()
    return {k: round(v * 1e6, 2) for k, v in out.items()}


def part_fleet(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))
    res = {"part": "fleet", "env": args.env, "cpus": os.cpu_count(),
           "load_avg_before": [round(x, 2) for x in os.getloadavg()],
           "per_row_us_in_process": fleet_breakdown(args.env)}
    res["runs"] = {str(n): fleet_run(n, args) for n in args.actors}
    return res


def fleet_run(n: int, args: argparse.Namespace) -> dict:
    from roborl.robots.launch import free_port
    from roborl.store.store import ReplayStore

    steps = args.steps
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tmp / "cfg.yaml"
        # Without --learn the learner starts learning only at its last row (warmup is checked
        # against each side's own budget): the figure is the transport + store path.
        warmup = min(1000, steps - 1) if args.learn else steps - 1
        l_warmup = warmup if args.learn else n * steps - 1
        cfg.write_text(f"""run: {{name: fleet, seed: 0}}
device: cpu
env: {{id: {args.env}}}
train: {{algo: sac, total_steps: {steps}, eval_every: 0, checkpoint_every: {10 * n * steps},
        log_every: {max(1, n * steps // 20)}, threads: 1}}
store: {{online_capacity: {2 * n * steps}, sampler: {{kind: uniform, demo_fraction: 0.0}}}}
sac: {{hidden: [64, 64], batch_size: 64, warmup_steps: {warmup}, utd: 1}}
distributed: {{batch: {args.batch}, send_every: {args.send_every}, timeout_s: 5.0, linger_s: 5.0,
              num_envs: {args.num_envs}}}
""")
        port = free_port()
        base = [sys.executable, "-m", "roborl", "--quiet", "train", str(cfg)]
        t0 = time.perf_counter()
        learner = subprocess.Popen(base + [f"run.dir={tmp / 'learner'}", f"train.total_steps={n * steps}",
                                          f"sac.warmup_steps={l_warmup}", "--role", "learner", "--learner", f"127.0.0.1:{port}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        actors = [subprocess.Popen(base + [f"run.dir={tmp / f'a{i}'}", f"run.seed={i + 1}", "--role", "actor",
                                           "--learner", f"127.0.0.1:{port}", "--actor-id", f"sim{i}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
                  for i in range(n)]
        outs = [a.communicate() for a in actors]
        l_out, l_err = learner.communicate()
        wall = time.perf_counter() - t0
        for i, (a, (o, e)) in enumerate(zip(actors, outs)):
            if a.returncode != 0:
                raise SystemExit(f"bench_scale: actor {i} failed: {e.strip().splitlines()[-1:]}")
        if learner.returncode != 0:
            raise SystemExit(f"bench_scale: learner failed: {l_err.strip().splitlines()[-1:]}")
        summ = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
        lsum = json.loads(l_out.strip().splitlines()[-1])
        committed = {}
        for i in range(n):
            st = ReplayStore.open(tmp / f"a{i}" / "store", mode="r")
            committed[f"sim{i}"] = st.end_row("online")
            st.close()
        lst = ReplayStore.open(tmp / "learner" / "store", mode="r")
        l_rows, l_streams = lst.end_row("online"), lst.streams()
        lst.close()
        rows = [json.loads(x) for x in (tmp / "learner" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("learner/received") is not None]
        rate = ((rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["time"] - rows[0]["time"])
                if len(rows) >= 2 and rows[-1]["time"] > rows[0]["time"] else None)
    per_actor = {s["actor_id"]: {"env_steps": s["env_steps"], "loop_s": s["loop_s"],
                                 "env_steps_per_s": round(s["steps_this_run"] / s["loop_s"], 1)} for s in summ}
    return {
        "actors": n, "steps_per_actor": steps, "num_envs_per_actor": args.num_envs, "learn": bool(args.learn),
        "batch": args.batch, "send_every": args.send_every,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "learner_rows_per_s": round(rate, 1) if rate else None,
        "sum_actor_env_steps_per_s": round(sum(v["env_steps_per_s"] for v in per_actor.values()), 1),
        "per_actor": per_actor,
        "wall_s_incl_startup": round(wall, 2),
        "learner_rows": l_rows, "learner_env_steps": lsum["env_steps"], "learner_streams": l_streams,
        "actor_committed_rows": committed,
        "exactly_once": l_rows == sum(committed.values()) and l_streams == committed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["ppo", "fleet"], default="ppo")
    ap.add_argument("--actors", type=int, nargs="+", default=[4], help="fleet: sim actors (several: one run each)")
    ap.add_argument("--steps", type=int, default=20000, help="fleet: env steps per actor")
    ap.add_argument("--batch", type=int, default=1024, help="fleet: max rows per push (distributed.batch)")
    ap.add_argument("--send-every", type=int, default=256, help="fleet: distributed.send_every")
    ap.add_argument("--num-envs", type=int, default=1, help="fleet: sims per actor (distributed.num_envs)")
    ap.add_argument("--learn", action="store_true", help="fleet: the learner runs SAC updates too (utd 1)")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts (the first should be 1)")
    ap.add_argument("--env", default=None, help="ppo: HalfCheetah-v5; fleet: Pendulum-v1")
    ap.add_argument("--n-envs", type=int, default=4, help="envs per rank")
    ap.add_argument("--rollout-steps", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--minibatch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=4, help="PPO iterations per run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.part == "fleet":
        args.env = args.env or "Pendulum-v1"
        print(json.dumps(part_fleet(args), indent=1))
        return
    args.env = args.env or "HalfCheetah-v5"
    print(json.dumps(part_ppo(args), indent=1))


if __name__ == "__main__":
    main()
