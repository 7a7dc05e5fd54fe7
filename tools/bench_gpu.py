"""GPU check: what roborl does on CUDA, in one JSON object. Not a CI test (needs a GPU).

Parts, each under its own time limit, each reported even when it fails:

* ``device``: GPU names and count, torch and CUDA versions.
* ``sac_updates``: SAC learner updates/s on CUDA at batch 256, 256x256 networks, HalfCheetah
  sizes (17 obs, 6 actions), fp32 and bf16, the batch resident on the GPU (the sampler's
  device mirror); the same on one CPU thread side by side.
* ``main_job``: ``roborl train configs/default.yaml device=cuda`` (the README's main job):
  env-steps/s, updates/s and final eval success.
* ``ppo``: ``roborl train configs/ppo_halfcheetah.yaml device=cuda`` for a short budget,
  env-steps/s; with ``torchrun`` over every GPU when ``roborl train --nproc`` is available.
* ``pixels``: the end-to-end pixel recipe (configs/pixels_push_e2e.yaml) when it exists.

Usage:
    bash tools/gpu_check.sh [--quick] [--main-steps 20000] [--out gpu.json]
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _device_info() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "cuda": torch.version.cuda, "count": torch.cuda.device_count(),
            "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def _sac_updates(device: str, precision: str, updates: int) -> float:
    """Updates/s of the SAC learner on a batch already on ``device``."""
    import torch

    from roborl.batch import Batch
    from roborl.config import build
    from roborl.learners.config import SACConfig
    from roborl.learners.sac import SAC

    torch.manual_seed(0)
    cfg = build(SACConfig, {"hidden": [256, 256], "batch_size": 256, "precision": precision})
    learner = SAC(17, 6, cfg, device)
    B = 256

    def batch() -> Batch:
        g = torch.Generator(device=device).manual_seed(1)
        r = lambda *s: torch.randn(*s, device=device, generator=g)  # noqa: E731
        return Batch(obs=r(B, 17), action=r(B, 6).clamp(-1, 1), reward=r(B), next_obs=r(B, 17),
                     discount=torch.full((B,), 0.99, device=device), weight=torch.ones(B, device=device),
                     index=torch.arange(B, device=device), is_demo=torch.zeros(B, dtype=torch.bool, device=device))

    b = batch()
    for _ in range(20):  # warm-up: kernels, allocator, autotuning
        learner.update(b)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(updates):
        learner.update(b)
    if device == "cuda":
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - t0)


def _run(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a roborl command; its last stdout line is its JSON summary."""
    t0 = time.perf_counter()
    env = dict(os.environ, ROBORL_QUIET="1")
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "cmd": " ".join(cmd)}
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1][:300], "cmd": " ".join(cmd)}
    try:
        summary = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {}
    return {"cmd": " ".join(cmd), "wall_s": round(wall, 1), "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Learner throughput only.")
    ap.add_argument("--updates", type=int, default=2000, help="Timed SAC updates per row on the GPU.")
    ap.add_argument("--main-steps", type=int, default=20_000, help="Env steps of the main job.")
    ap.add_argument("--ppo-steps", type=int, default=200_000, help="Env steps of the PPO run.")
    ap.add_argument("--out", default=None, help="Also write the JSON here.")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed (bash tools/install.sh)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False; "
              f"torch {torch.__version__}, CUDA build {torch.version.cuda})", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": _device_info()}
    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    for dev, prec, n in (("cuda", "fp32", args.updates), ("cuda", "bf16", args.updates),
                         ("cpu", "fp32", max(50, args.updates // 20))):
        try:
            rows[f"{dev}_{prec}"] = round(_sac_updates(dev, prec, n), 1)
        except Exception as e:  # report and go on: one failing row must not hide the others
            rows[f"{dev}_{prec}"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    out["sac_updates_per_s"] = rows
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            py = sys.executable
            out["main_job"] = _run([py, "-m", "roborl", "train", "configs/default.yaml", "device=cuda",
                                    f"train.total_steps={args.main_steps}", f"run.dir={tmp}/main"], timeout=300)
            ngpu = torch.cuda.device_count()
            ppo = [py, "-m", "roborl", "train", "configs/ppo_halfcheetah.yaml", "device=cuda",
                   f"train.total_steps={args.ppo_steps}", "train.eval_every=0", f"run.dir={tmp}/ppo"]
            if ngpu > 1:
                ppo.append(f"--nproc={ngpu}")
            out["ppo"] = _run(ppo, timeout=150)
            if (REPO / "configs/pixels_push_e2e.yaml").exists():
                out["pixels"] = _run([py, "-m", "roborl", "train", "configs/pixels_push_e2e.yaml", "device=cuda",
                                      "train.max_minutes=1.5", f"run.dir={tmp}/pix"], timeout=150)
            else:
                out["pixels"] = {"skipped": "configs/pixels_push_e2e.yaml does not exist yet"}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
