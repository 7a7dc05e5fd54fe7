"""Robot server and actor->learner transport benchmarks on loopback; prints one JSON object.

    python tools/bench_robot.py [--env roborl/Reach-v0] [--quick]
    MUJOCO_GL=osmesa python tools/bench_robot.py --pixels 64 [--env roborl/Push-v0] [--quick]

* ``rtt_20hz``: a client stepping the ``sim:`` server at 20 Hz. ``step_ms`` is the
  client-side ``env.step`` call (send -> state after the control period: it includes the
  wait for the next tick, so it is bounded by one period); ``ping_ms`` is the transport
  round trip alone; ``server`` holds the server's own tick jitter and step latency.
* ``rates``: the server at 200/500/1000 Hz (realtime twin) with a client stepping as fast as
  it can; ``sustainable_hz`` is the highest rate whose achieved step rate is >= 95 % of it.
* ``--pixels SIZE`` (instead of the above): the control rate with Dict observations, proprio +
  2 cameras (front, wrist) of SIZE x SIZE uint8, side by side with proprio only, in one run:
  ``max_lockstep`` is a client stepping a lockstep twin (1000 Hz ticks) as fast as it can
  (render + wire + client decode per step), ``realtime`` the achieved step rate against the
  realtime twin at 10/20/50 Hz (sustained when >= 95 % of the rate), ``obs_bytes`` the
  observation payload per step.
* ``actor_learner``: transitions/s from an actor's local store through ZeroMQ into a learner
  process's store (the ``--role actor/learner`` path, without SAC updates).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _pct(x: list[float]) -> dict[str, float]:
    a = np.asarray(x) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "n": int(a.size)}


def bench_rtt(env_id: str, steps: int) -> dict:
    from roborl.robots.client import make_robot_env
    from roborl.robots.launch import ServerProcess

    with ServerProcess(f"sim:{env_id}", hz=20) as srv:
        env = make_robot_env(srv.url)
        try:
            pings = []
            for _ in range(200):
                t = time.perf_counter()
                env.channel.call("ping")
                pings.append(time.perf_counter() - t)
            env.reset(seed=0)
            lat = []
            for i in range(steps):
                t = time.perf_counter()
                _, _, term, trunc, _ = env.step(np.zeros(env.action_space.shape, np.float32))
                lat.append(time.perf_counter() - t)
                if term or trunc:
                    env.reset(seed=i)
            server = env.stats()
        finally:
            env.close()
    return {"hz": 20, "step_ms": _pct(lat), "ping_ms": _pct(pings),
            "server": {k: server[k] for k in ("tick_jitter_ms", "step_latency_ms", "achieved_tick_hz", "counts")}}


def bench_rates(env_id: str, seconds: float, rates: list[float]) -> dict:
    from roborl.robots.client import make_robot_env
    from roborl.robots.launch import ServerProcess

    out = {}
    for hz in rates:
        with ServerProcess(f"sim:{env_id}", hz=hz) as srv:
            env = make_robot_env(srv.url)
            try:
                env.reset(seed=0)
                n, busy, t_end = 0, 0.0, time.perf_counter() + seconds
                a = np.zeros(env.action_space.shape, np.float32)
                while time.perf_counter() < t_end:
                    t = time.perf_counter()
                    _, _, term, trunc, _ = env.step(a)
                    busy += time.perf_counter() - t
                    n += 1
                    if term or trunc:  # homing is not control: resets are left out of the rate
                        env.reset(seed=n)
                achieved = n / busy
                st = env.stats()
            finally:
                env.close()
        out[str(int(hz))] = {"achieved_steps_per_s": round(achieved, 1), "tick_jitter_ms": st["tick_jitter_ms"],
                             "overruns": st["counts"].get("overruns", 0), "watchdog_events": st["counts"].get("watchdog_events", 0)}
    ok = [float(h) for h, r in out.items() if r["achieved_steps_per_s"] >= 0.95 * float(h)]
    return {"per_rate": out, "sustainable_hz": max(ok) if ok else None}


def _step_rate(url: str, seconds: float) -> dict:
    from roborl.robots.client import make_robot_env

    env = make_robot_env(url, timeout_s=10.0, connect_timeout_s=30.0)
    try:
        obs, _ = env.reset(seed=0)
        a = np.zeros(env.action_space.shape, np.float32)
        lat, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            obs, _, term, trunc, _ = env.step(a)
            lat.append(time.perf_counter() - t)
            if term or trunc:  # homing is not control: resets are left out of the rate
                obs, _ = env.reset(seed=len(lat))
        nbytes = sum(np.asarray(v).nbytes for v in (_leaves(obs) if isinstance(obs, dict) else [obs]))
        st = env.stats()
    finally:
        env.close()
    return {"steps_per_s": round(len(lat) / sum(lat), 1), "step_ms": _pct(lat), "obs_bytes": int(nbytes),
            "overruns": st["counts"].get("overruns", 0), "watchdog_events": st["counts"].get("watchdog_events", 0)}


def _leaves(obs: dict) -> list:
    out = []
    for v in obs.values():
        out.extend(_leaves(v) if isinstance(v, dict) else [v])
    return out


def bench_pixels(env_id: str, size: int, seconds: float) -> dict:
    """proprio vs proprio + 2 cameras of size x size through the robot server (see the module docstring)."""
    from roborl.robots.launch import ServerProcess

    out: dict = {"image_size": size, "cameras": ["front", "wrist"], "mujoco_gl": os.environ.get("MUJOCO_GL")}
    for mode in ("proprio", "proprio+pixels"):
        extra = [f"env.kwargs.obs_mode={mode}", f"env.kwargs.image_size={size}", "env.kwargs.cameras=[front,wrist]"]
        row: dict = {}
        with ServerProcess(f"sim:{env_id}", hz=1000, sim_clock="lockstep", extra=extra) as srv:
            row["max_lockstep"] = _step_rate(srv.url, seconds)
        rt = {}
        for hz in (10, 20, 50):
            with ServerProcess(f"sim:{env_id}", hz=hz, extra=extra) as srv:
                r = _step_rate(srv.url, seconds)
            rt[str(hz)] = {"steps_per_s": r["steps_per_s"], "step_ms": r["step_ms"], "overruns": r["overruns"],
                           "sustained": r["steps_per_s"] >= 0.95 * hz}
        row["realtime"] = rt
        out[mode] = row
    return out


def _learner_main(port: int, path: str, obs_dim: int, act_dim: int) -> None:
    """Learner side of the throughput bench: a store and the real endpoint, no SAC."""
    from gymnasium import spaces

    from roborl.runners.distributed import LearnerEndpoint, TransitionSink
    from roborl.store.store import ReplayStore

    store = ReplayStore.create(Path(path) / "store", env_id="bench", observation_space=spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                               action_space=spaces.Box(-1, 1, (act_dim,), np.float32))
    ep = LearnerEndpoint(TransitionSink(store, Path(path) / "actor_stream.json"), "127.0.0.1", port, None)
    print("ready", flush=True)
    end = time.monotonic() + 300
    while not ep.bye and time.monotonic() < end:
        ep.poll(50)
    ep.close()
    store.close()


def bench_actor_learner(n: int, obs_dim: int = 13, act_dim: int = 4) -> dict:
    from gymnasium import spaces

    from roborl.robots.launch import free_port
    from roborl.runners.distributed import ActorLink, DistributedConfig
    from roborl.store.store import ReplayStore

    tmp = Path(tempfile.mkdtemp(prefix="bench_robot_"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--_learner", str(port), str(tmp / "L"), str(obs_dim), str(act_dim)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        store = ReplayStore.create(tmp / "A" / "store", env_id="bench",
                                   observation_space=spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                                   action_space=spaces.Box(-1, 1, (act_dim,), np.float32))
        rng = np.random.default_rng(0)
        obs = rng.standard_normal(obs_dim).astype(np.float32)
        store.start_episode(obs)
        for i in range(n):
            nxt = rng.standard_normal(obs_dim).astype(np.float32)
            end = (i + 1) % 200 == 0
            store.add_step(action=rng.uniform(-1, 1, act_dim).astype(np.float32), reward=0.0, next_obs=nxt,
                           terminated=False, truncated=end)
            if end and i + 1 < n:
                store.start_episode(nxt)
        cfg = DistributedConfig(batch=4096, timeout_s=10.0)
        link = ActorLink(store, "127.0.0.1", port, None, "bench", cfg)
        assert link.maybe_connect()
        t0 = time.perf_counter()
        while link.backlog() > 0:
            link.push(max_messages=64)
        dt = time.perf_counter() - t0
        link.bye()
        link.close()
        store.close()
        proc.wait(timeout=60)
        lst = ReplayStore.open(tmp / "L" / "store", mode="r")
        stored = lst.num_steps("online")
        lst.close()
        return {"transitions": n, "obs_dim": obs_dim, "act_dim": act_dim, "batch": cfg.batch,
                "transitions_per_s": round(n / dt, 1), "stored_by_learner": stored}
    finally:
        if proc.poll() is None:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=None, help="Task (default: roborl/Reach-v0; roborl/Push-v0 with --pixels).")
    p.add_argument("--quick", action="store_true", help="Shorter runs.")
    p.add_argument("--pixels", type=int, default=None, metavar="SIZE",
                   help="Only the Dict-observation bench: proprio + 2 cameras of SIZE x SIZE vs proprio only.")
    p.add_argument("--_learner", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._learner:
        port, path, od, ad = a._learner
        return _learner_main(int(port), path, int(od), int(ad))
    if a.pixels:
        env = a.env or "roborl/Push-v0"
        print(json.dumps({"bench": "robot_pixels", "env": env, "cpus": os.cpu_count(),
                          "load_avg_1m": round(os.getloadavg()[0], 2),
                          "pixels": bench_pixels(env, a.pixels, 2.0 if a.quick else 5.0)}, indent=1))
        return None
    a.env = a.env or "roborl/Reach-v0"
    res = {"bench": "robot", "env": a.env, "cpus": os.cpu_count(),
           "load_avg_1m": round(os.getloadavg()[0], 2),
           "rtt_20hz": bench_rtt(a.env, 60 if a.quick else 200),
           "rates": bench_rates(a.env, 1.0 if a.quick else 3.0, [200, 500, 1000]),
           "actor_learner": bench_actor_learner(10_000 if a.quick else 50_000)}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
