"""Latency per action of exported policies: onnxruntime, TorchScript and the torch policy roborl eval runs.

    python tools/bench_export.py                       # trains tiny SAC (residual) and PPO runs first
    python tools/bench_export.py --obs image           # a pixel SAC run (Push, 2 x 64x64 cameras + proprio)
    python tools/bench_export.py --ckpt runs/push --calls 5000

One CPU thread everywhere (torch.set_num_threads(1), onnxruntime intra/inter-op threads 1), batch 1
(one robot step), a float32 observation from the env. The three runners are timed interleaved, in
rounds of 100 calls each, so drift on a shared machine hits all of them alike. Prints one JSON
object: per algo and runtime, p50 / p99 / mean latency in microseconds, plus the parity of each
file with the torch policy on the timed observations.

``--obs image`` trains a short pixel SAC run on roborl/Push-v0 (proprio + front and wrist cameras at
64x64, the encoder and MLP sizes of configs/pixels_push.yaml) and times it the same way; it renders, so
it needs a GL backend (MUJOCO_GL=osmesa or egl).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _train(root: Path) -> dict[str, Path]:
    """Tiny real runs through the CLI, with the network sizes of our configs (SAC 256x256, PPO 64x64)."""
    cfg = root / "cfg.yaml"
    cfg.write_text("run: {name: bench-export, seed: 0}\nenv: {id: roborl/Reach-v0}\n")
    common = ["train.eval_every=0", "train.eval_episodes=1", "device=cpu", "train.threads=1"]
    runs = {
        "sac": ["train.algo=sac", "store.demos=[demos/reach]", "sac.residual=true", "sac.bc_pretrain_steps=50",
                "sac.hidden=[256,256]", "sac.batch_size=64", "sac.warmup_steps=100", "train.total_steps=300",
                "train.checkpoint_every=300", "sac.precision=fp32"],
        "ppo": ["train.algo=ppo", "ppo.hidden=[64,64]", "ppo.n_envs=2", "ppo.rollout_steps=128", "ppo.vector=sync",
                "train.total_steps=512", "train.checkpoint_every=512"],
    }
    out = {}
    env = dict(os.environ, ROBORL_QUIET="1")
    for algo, args in runs.items():
        d = root / algo
        subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(cfg), f"run.dir={d}", *common, *args],
                       cwd=REPO, env=env, check=True, capture_output=True)
        out[algo] = d
    return out


def _train_image(root: Path) -> dict[str, Path]:
    """A short end-to-end pixel SAC run with configs/pixels_push.yaml's network sizes (only the weights' values
    differ from a trained policy; latency does not depend on them)."""
    cfg = root / "cfg.yaml"
    cfg.write_text("run: {name: bench-export-pixels, seed: 0}\n")
    args = ["env.id=roborl/Push-v0", "env.kwargs={obs_mode: proprio+pixels, image_size: 64, cameras: [front, wrist]}",
            "train.algo=sac", "train.eval_every=0", "train.eval_episodes=1", "device=cpu", "train.threads=1",
            "sac.hidden=[256,256]", "sac.layer_norm=true", "sac.batch_size=8", "sac.warmup_steps=100",
            "sac.precision=fp32", "sac.encoder.channels=32", "sac.encoder.layers=4", "sac.encoder.feature_dim=50",
            "train.total_steps=110", "train.checkpoint_every=110"]
    env = dict(os.environ, ROBORL_QUIET="1")
    d = root / "sac_pixels"
    subprocess.run([sys.executable, "-m", "roborl.cli", "train", str(cfg), f"run.dir={d}", *args],
                   cwd=REPO, env=env, check=True, capture_output=True)
    return {"sac_pixels": d}


def _row(obs: Any, i: int) -> Any:
    """Observation i as a batch of one ([1, O], or {leaf: [1, *shape]})."""
    if isinstance(obs, dict):
        return {k: v[i:i + 1] for k, v in obs.items()}
    return obs[i][None]


def _percentiles(ts: list[float]) -> dict[str, float]:
    a = np.asarray(ts) * 1e6
    return {"p50_us": round(float(np.percentile(a, 50)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
            "mean_us": round(float(a.mean()), 2), "calls": int(len(a))}


def bench(ckpt: Path, out_dir: Path, calls: int, warmup: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    from roborl.export.parity import record_observations
    from roborl.export.policy import load_checkpoint_policy, load_exported
    from roborl.export.writers import load_runner, write_onnx, write_torchscript

    exp = load_exported(ckpt)
    onnx_path, ts_path = out_dir / f"{ckpt.name}.onnx", out_dir / f"{ckpt.name}.pt"
    write_onnx(exp, onnx_path)
    write_torchscript(exp, ts_path)
    policy, *_ = load_checkpoint_policy(ckpt)
    obs = record_observations(ckpt, n=max(200, min(calls, 2000)))
    n_obs = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)

    def torch_policy(o: Any) -> np.ndarray:  # what roborl eval calls per step (Reach, Push: identity rescale)
        return policy.act(o, deterministic=True)

    runners = {"onnxruntime": load_runner(onnx_path, threads=1), "torchscript": load_runner(ts_path, threads=1),
               "torch_policy": torch_policy}
    times: dict[str, list[float]] = {k: [] for k in runners}
    for name, fn in runners.items():
        for i in range(warmup):
            fn(_row(obs, i % n_obs))
    done = 0
    while done < calls:
        n = min(100, calls - done)
        for name, fn in runners.items():
            ts = times[name]
            for i in range(done, done + n):
                o = _row(obs, i % n_obs)
                t0 = time.perf_counter()
                fn(o)
                ts.append(time.perf_counter() - t0)
        done += n
    ref = torch_policy(obs)
    parity = {k: float(np.abs(runners[k](obs) - ref).max()) for k in ("onnxruntime", "torchscript")}
    return {"checkpoint": str(ckpt), "algo": exp.meta["algo"], "image_inputs": exp.meta["image_inputs"],
            "inputs": exp.meta["inputs"], "obs_dim": exp.obs_dim, "act_dim": exp.act_dim,
            "stages": exp.meta["stages"], "latency": {k: _percentiles(v) for k, v in times.items()},
            "max_abs_diff_vs_torch_policy": parity}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", default=None, help="Checkpoint or run dir (repeatable); default: tiny runs.")
    ap.add_argument("--calls", type=int, default=5000, help="Timed calls per runtime.")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--obs", choices=["state", "image"], default="state",
                    help="Default runs: state (SAC residual and PPO on Reach) or image (pixel SAC on Push).")
    args = ap.parse_args()
    load0 = list(os.getloadavg())
    import onnxruntime
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = _train_image if args.obs == "image" else _train
        ckpts = [Path(c) for c in args.ckpt] if args.ckpt else list(train(root).values())
        results = [bench(c, root, args.calls, args.warmup) for c in ckpts]
    print(json.dumps({"machine": {"platform": platform.platform(), "processor": platform.processor(),
                                  "cpus": os.cpu_count(), "python": platform.python_version(),
                                  "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                                  "loadavg_before": load0, "loadavg_after": list(os.getloadavg())},
                      "threads": 1, "batch": 1, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
