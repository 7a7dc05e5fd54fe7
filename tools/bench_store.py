"""Benchmark the replay store against an in-memory numpy ring buffer (SB3-style). Prints JSON.

    python tools/bench_store.py            # full: 1M-step store (about 2 minutes on 2 cores)
    python tools/bench_store.py --steps 200000 --quick
    python tools/bench_store.py --part frames --base /work/wt/frames_base   # frames once vs a base checkout

Measures (targets in brackets): committed append low-dim [>= 20k steps/s], two
128x128x3 cameras + proprio [>= 50 steps/s], uniform sample batch 256 low-dim [>= 5k/s],
PER sample + priority update batch 256 at 1M capacity [>= 1k/s], reopen of a 1M-step store
including loading the RAM mirror [<= 10 s], steps lost after kill -9 [<= 1].

``--part frames``: image stores (two uint8 cameras at 64x64 and at 128x128 + proprio, 100-step
episodes): committed append steps/s, disk bytes per step, RAM-mirror bytes per 100k steps and
batches/s (b256, n-step 3), for this checkout and for ``--base`` (another checkout of roborl,
e.g. the commit before frames once), each in its own subprocess, interleaved in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from roborl.store import ReplayStore, Sampler, SamplerConfig

OBS_DIM, ACT_DIM, EP_LEN = 17, 6, 1000
OBS = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)


class NumpyRing:
    """The SB3 ReplayBuffer pattern: preallocated arrays, a write pointer, uniform sampling."""

    def __init__(self, cap: int) -> None:
        self.cap, self.pos, self.full = cap, 0, False
        self.obs = np.zeros((cap, OBS_DIM), np.float32)
        self.next_obs = np.zeros((cap, OBS_DIM), np.float32)
        self.act = np.zeros((cap, ACT_DIM), np.float32)
        self.rew = np.zeros(cap, np.float32)
        self.done = np.zeros(cap, np.float32)
        self.rng = np.random.default_rng(0)

    def add(self, o, no, a, r, d) -> None:
        self.obs[self.pos] = o
        self.next_obs[self.pos] = no
        self.act[self.pos] = a
        self.rew[self.pos] = r
        self.done[self.pos] = d
        self.pos = (self.pos + 1) % self.cap
        self.full = self.full or self.pos == 0

    def sample(self, b: int):
        idx = self.rng.integers(0, self.cap if self.full else self.pos, b)
        return tuple(torch.as_tensor(x[idx]) for x in (self.obs, self.act, self.rew, self.next_obs, self.done))


def _rate(n: int, dt: float) -> float:
    return round(n / dt, 1)


def bench_append_lowdim(root: Path, steps: int) -> tuple[dict, Path]:
    rng = np.random.default_rng(0)
    O = rng.standard_normal((EP_LEN + 1, OBS_DIM)).astype(np.float32)
    A = rng.uniform(-1, 1, (EP_LEN, ACT_DIM)).astype(np.float32)
    p = root / "lowdim"
    st = ReplayStore.create(p, env_id="bench", observation_space=OBS, action_space=ACT, online_capacity=steps)
    t = time.perf_counter()
    for e in range(steps // EP_LEN):
        st.start_episode(O[0])
        for i in range(EP_LEN):
            st.add_step(action=A[i], reward=0.5, next_obs=O[i + 1], terminated=False, truncated=i == EP_LEN - 1)
    dt = time.perf_counter() - t
    st.close()
    ring = NumpyRing(steps)
    n_ring = min(steps, 200_000)
    t = time.perf_counter()
    for k in range(n_ring):
        i = k % EP_LEN
        ring.add(O[i], O[i + 1], A[i], 0.5, 0.0)
    dt_ring = time.perf_counter() - t
    return {"steps": steps, "store_steps_per_s": _rate(steps, dt), "numpy_ring_steps_per_s": _rate(n_ring, dt_ring),
            "store_mib_on_disk": round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20, 1)}, p


def bench_append_images(root: Path, steps: int) -> dict:
    obs_sp = gym.spaces.Dict({"cam0": gym.spaces.Box(0, 255, (128, 128, 3), np.uint8),
                              "cam1": gym.spaces.Box(0, 255, (128, 128, 3), np.uint8),
                              "proprio": gym.spaces.Box(-np.inf, np.inf, (14,), np.float32)})
    act = gym.spaces.Box(-1, 1, (7,), np.float32)
    rng = np.random.default_rng(0)
    # Camera-like frames (smooth gradient + sensor noise), not pure noise, not constant.
    base = np.add.outer(np.arange(128), np.arange(128))[..., None] % 256
    frames = [np.clip(base + rng.integers(0, 12, (128, 128, 3)), 0, 255).astype(np.uint8) for _ in range(8)]
    mk = lambda i: {"cam0": frames[i % 8], "cam1": frames[(i + 3) % 8], "proprio": rng.standard_normal(14)}  # noqa: E731
    p = root / "images"
    st = ReplayStore.create(p, env_id="bench-img", observation_space=obs_sp, action_space=act)
    t = time.perf_counter()
    st.start_episode(mk(0))
    for i in range(steps):
        st.add_step(action=np.zeros(7), reward=0.0, next_obs=mk(i + 1), terminated=False, truncated=i == steps - 1)
    dt = time.perf_counter() - t
    st.close()
    return {"steps": steps, "chunk_rows": st.chunk_rows, "store_steps_per_s": _rate(steps, dt)}


def bench_sampling(p: Path, iters: int) -> dict:
    out = {}
    t = time.perf_counter()
    st = ReplayStore.open(p, mode="a")
    s = Sampler(st, SamplerConfig(kind="uniform"), seed=0)
    out["reopen_with_ram_mirror_s"] = round(time.perf_counter() - t, 2)
    out["reopened_steps"] = st.num_steps("online")
    s.sample(256, gamma=0.99)
    t = time.perf_counter()
    for _ in range(iters):
        s.sample(256, gamma=0.99)
    out["uniform_b256_batches_per_s"] = _rate(iters, time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(iters // 2):
        s.sample(256, gamma=0.99, n_step=3)
    out["uniform_b256_nstep3_batches_per_s"] = _rate(iters // 2, time.perf_counter() - t)
    per = Sampler(st, SamplerConfig(kind="per"), seed=0)
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(iters // 2):
        b = per.sample(256, gamma=0.99, step=1000)
        per.update_priorities(b.index, torch.rand(256, generator=gen))
    out["per_b256_sample_update_batches_per_s"] = _rate(iters // 2, time.perf_counter() - t)
    out["per_capacity_rows"] = per.mirrors["online"].alloc
    st.close()
    ring = NumpyRing(out["reopened_steps"])
    ring.pos, ring.full = 0, True
    t = time.perf_counter()
    for _ in range(iters):
        ring.sample(256)
    out["numpy_ring_uniform_b256_batches_per_s"] = _rate(iters, time.perf_counter() - t)
    return out


_KILL_WRITER = r"""
import os, sys, numpy as np, gymnasium as gym
from roborl.store import ReplayStore
st = ReplayStore.open_or_create(sys.argv[1], env_id="kill", observation_space=gym.spaces.Box(-1e9, 1e9, (17,), np.float32),
                                action_space=gym.spaces.Box(-1, 1, (6,), np.float32), chunk_rows=1024)
os.write(1, b"ready\n")
row = st.num_steps("online")
while True:
    st.start_episode(np.full(17, row, np.float32))
    for i in range(500):
        row += 1
        st.add_step(action=np.zeros(6), reward=float(row), next_obs=np.full(17, row, np.float32), terminated=False, truncated=i == 499)
        os.write(1, b"%d\n" % row)
"""


def bench_kill(root: Path, trials: int) -> dict:
    p = root / "kill"
    lost = []
    rng = np.random.default_rng(0)
    for _ in range(trials):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_WRITER, str(p)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"  # type: ignore[union-attr]
        time.sleep(float(rng.uniform(0.3, 1.0)))
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.stdout.read().split()  # type: ignore[union-attr]
        proc.wait()
        acked = int(out[-1]) if out and out[-1].isdigit() else 0
        with ReplayStore.open(p) as st:
            eps = st.episodes("online")
            got = st.read_rows("online", int(eps[0, 0]), int(eps[-1, 0] + eps[-1, 1]))["reward"] if len(eps) else []
            have = int(np.max(got)) if len(got) else 0
        lost.append(max(0, acked - have))
    return {"trials": trials, "max_acknowledged_steps_lost": int(max(lost)), "lost_per_trial": lost}


def frames_worker(img: int, steps: int, iters: int) -> dict:
    """One side of ``--part frames`` (runs against whatever roborl PYTHONPATH names)."""
    cam = gym.spaces.Box(0, 255, (img, img, 3), np.uint8)
    obs_sp = gym.spaces.Dict({"pixels": gym.spaces.Dict({"front": cam, "wrist": cam}),
                              "proprio": gym.spaces.Box(-np.inf, np.inf, (14,), np.float32)})
    act = gym.spaces.Box(-1, 1, (7,), np.float32)
    rng = np.random.default_rng(0)
    base = np.add.outer(np.arange(img), np.arange(img))[..., None] % 256
    frames = [np.clip(base + rng.integers(0, 12, (img, img, 3)), 0, 255).astype(np.uint8) for _ in range(16)]
    mk = lambda i: {"pixels": {"front": frames[i % 16], "wrist": frames[(i + 5) % 16]},  # noqa: E731
                    "proprio": rng.standard_normal(14).astype(np.float32)}
    root = Path(tempfile.mkdtemp(prefix="bench_frames_"))
    try:
        p = root / "s"
        st = ReplayStore.create(p, env_id="bench-img", observation_space=obs_sp, action_space=act)
        t = time.perf_counter()
        i = 0
        while i < steps:
            st.start_episode(mk(i))
            for k in range(100):
                st.add_step(action=np.zeros(7), reward=0.0, next_obs=mk(i + 1), terminated=False, truncated=k == 99)
                i += 1
        st.close()
        dt = time.perf_counter() - t
        data = sum(f.stat().st_size for f in (p / "data.zarr").rglob("*") if f.is_file())
        st = ReplayStore.open(p, mode="r")
        s = Sampler(st, SamplerConfig(kind="uniform"), seed=0)
        m = s.mirrors["online"]
        tensors = list(m.data.values()) + list(getattr(m, "finals", {}).values())
        dev_bytes = sum(x.element_size() * x.nelement() for x in tensors)
        per_row = dev_bytes / max(1, m.alloc)  # the ring is preallocated: bytes per slot
        s.sample(256, gamma=0.99, n_step=3)
        t = time.perf_counter()
        for _ in range(iters):
            b = s.sample(256, gamma=0.99, n_step=3)
        bps = iters / (time.perf_counter() - t)
        st.close()
        return {"img": img, "steps": steps, "append_steps_per_s": round(steps / dt, 1),
                "disk_bytes_per_step": round(data / steps), "mirror_dtype": str(b.obs["pixels.front"].dtype),
                "ram_gb_per_100k_steps": round(per_row * 100_000 / 1e9, 2),
                "sample_b256_nstep3_batches_per_s": round(bps, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_frames(base: str, imgs: list[int], steps: int, iters: int, repeats: int) -> dict:
    """This checkout vs ``base``, alternating subprocesses; the median of ``repeats`` per figure."""
    here = str(Path(__file__).resolve().parents[1])
    out: dict = {}
    for img in imgs:
        runs: dict[str, list[dict]] = {"frames_once": [], "base": []}
        for _ in range(repeats):
            for name, root in (("base", base), ("frames_once", here)):
                env = dict(os.environ, PYTHONPATH=root)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--frames-worker", str(img), "--steps", str(steps),
                       "--iters", str(iters)]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=root)
                runs[name].append(json.loads(r.stdout))
        row = {}
        for name, rs in runs.items():
            row[name] = {k: (float(np.median([x[k] for x in rs])) if isinstance(rs[0][k], (int, float)) else rs[0][k])
                         for k in rs[0]}
        row["disk_ratio"] = round(row["frames_once"]["disk_bytes_per_step"] / row["base"]["disk_bytes_per_step"], 3)
        row["ram_ratio"] = round(row["frames_once"]["ram_gb_per_100k_steps"] / row["base"]["ram_gb_per_100k_steps"], 3)
        out[f"{img}x{img}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000, help="Low-dim store size (append, reopen, sampling).")
    ap.add_argument("--image-steps", type=int, default=400)
    ap.add_argument("--iters", type=int, default=2000, help="Batches per sampling measurement.")
    ap.add_argument("--kill-trials", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="Small sizes, for a smoke run.")
    ap.add_argument("--part", choices=["all", "frames"], default="all")
    ap.add_argument("--base", default=None, help="--part frames: a checkout of roborl to compare against.")
    ap.add_argument("--repeats", type=int, default=3, help="--part frames: interleaved runs per side.")
    ap.add_argument("--frames-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.frames_worker is not None:
        torch.set_num_threads(1)
        print(json.dumps(frames_worker(args.frames_worker, args.steps, args.iters)))
        return
    if args.part == "frames":
        if not args.base:
            ap.error("--part frames needs --base <checkout of roborl>")
        steps = 2000 if args.steps == 1_000_000 else args.steps
        res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()}-core CPU, {platform.machine()}",
               "torch_threads": 1, "base": args.base, "steps": steps,
               "frames": bench_frames(args.base, [64, 128], steps, args.iters // 4, args.repeats)}
        print(json.dumps(res, indent=1))
        return
    if args.quick:
        args.steps, args.image_steps, args.iters, args.kill_trials = 50_000, 100, 300, 1
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        res: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()}-core CPU, {platform.machine()}",
                     "torch_threads": 1}
        res["append_lowdim"], p = bench_append_lowdim(root, args.steps)
        res["append_two_cameras_proprio"] = bench_append_images(root, args.image_steps)
        res["sampling"] = bench_sampling(p, args.iters)
        res["kill9"] = bench_kill(root, args.kill_trials)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
