"""GPU check: what roborl does on CUDA, in one JSON object. Not a CI test (needs a GPU).

Parts, each under its own time limit, each reported even when it fails:

* ``device``: GPU names and count, torch and CUDA versions.
* ``sac_updates``: SAC learner updates/s on CUDA at batch 256, 256x256 networks, HalfCheetah
  sizes (17 obs, 6 actions), fp32 and bf16, compiled (``sac.compile``, CUDA's default) and eager,
  the batch resident on the GPU (the sampler's device mirror); the same on one CPU thread.
* ``main_job``: ``roborl train configs/default.yaml device=cuda`` (the README's main job):
  env-steps/s, updates/s and final eval success.
* ``ppo``: ``roborl train configs/ppo_halfcheetah.yaml device=cuda`` for a short budget,
  env-steps/s; with ``torchrun`` over every GPU when ``roborl train --nproc`` is available.
* ``pixels_seedK``: the end-to-end pixel recipe (configs/pixels_push_e2e.yaml) for ``--pixel-minutes``
  per seed, with its final eval success.

With 8 or more CPUs the training runs go side by side (``"parallel": true``; they then share the GPU),
which keeps the whole check near 8 minutes; the updates/s rows run first, alone.

Usage:
    bash tools/gpu_check.sh [--quick] [--main-steps 20000] [--pixel-seeds 3 --pixel-minutes 5] [--out gpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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


def _sac_updates(device: str, precision: str, updates: int, compile: str = "auto") -> float:
    """Updates/s of the SAC learner on a batch already on ``device`` (``compile``: ``sac.compile``)."""
    import torch

    from roborl.batch import Batch
    from roborl.config import build
    from roborl.learners.config import SACConfig
    from roborl.learners.sac import SAC

    torch.manual_seed(0)
    cfg = build(SACConfig, {"hidden": [256, 256], "batch_size": 256, "precision": precision, "compile": compile})
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


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a roborl command (its output to ``log``); :func:`_finish` collects it."""
    env = dict(os.environ, ROBORL_QUIET="1")
    f = open(log, "w")
    p = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
    p._t0 = time.perf_counter()  # type: ignore[attr-defined]
    p._log, p._logf = log, f  # type: ignore[attr-defined]
    return p


def _rates(run_dir: Path) -> dict[str, float]:
    """The last logged env-steps/s and updates/s (off-policy) or fps (on-policy) of a run (metrics.jsonl)."""
    out: dict[str, float] = {}
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            out.update({k: round(float(row[k]), 1) for k in ("env_steps_per_s", "updates_per_s", "fps") if k in row})
    except (OSError, ValueError):
        pass
    return out


def _finish(p: subprocess.Popen, cmd: list[str], timeout: float, run_dir: Path) -> dict[str, Any]:
    """Wait for a command started by :func:`_start`; its last stdout line is its JSON summary."""
    left = timeout - (time.perf_counter() - p._t0)  # type: ignore[attr-defined]
    try:
        p.wait(timeout=max(left, 1.0))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return {"error": f"timed out after {timeout:.0f} s", "cmd": " ".join(cmd), **_rates(run_dir)}
    finally:
        p._logf.close()  # type: ignore[attr-defined]
    wall = getattr(p, "_t1", time.perf_counter()) - p._t0  # type: ignore[attr-defined]
    lines = Path(p._log).read_text(errors="replace").strip().splitlines()  # type: ignore[attr-defined]
    if p.returncode != 0:
        return {"error": (lines or ["exit %d" % p.returncode])[-1][:300], "cmd": " ".join(cmd)}
    try:
        summary = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {}
    return {"cmd": " ".join(cmd), "wall_s": round(wall, 1), "summary": summary, **_rates(run_dir)}


def _wait_all(jobs: dict[str, tuple[subprocess.Popen, float]], poll_s: float = 0.5) -> None:
    """Wait until every process (with its timeout in seconds) has ended or run past its timeout, noting
    when each ended (``_t1``, for its wall time); :func:`_finish` then kills the late ones."""
    while True:
        now = time.perf_counter()
        running = False
        for p, timeout in jobs.values():
            if p.poll() is not None:
                if not hasattr(p, "_t1"):
                    p._t1 = now  # type: ignore[attr-defined]
            elif now - p._t0 < timeout:  # type: ignore[attr-defined]
                running = True
        if not running:
            return
        time.sleep(poll_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Learner throughput only.")
    ap.add_argument("--updates", type=int, default=2000, help="Timed SAC updates per row on the GPU.")
    ap.add_argument("--main-steps", type=int, default=20_000, help="Env steps of the main job.")
    ap.add_argument("--ppo-steps", type=int, default=200_000, help="Env steps of the PPO run.")
    ap.add_argument("--pixel-seeds", type=int, default=1, help="Seeds of the end-to-end pixel recipe.")
    ap.add_argument("--pixel-minutes", type=float, default=1.5, help="Training minutes per pixel seed.")
    ap.add_argument("--pixel-eval-episodes", type=int, default=20, help="Final eval episodes per pixel seed.")
    ap.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=None,
                    help="Run the training jobs side by side (default: with 8 or more CPUs).")
    ap.add_argument("--keep", action="store_true", help="Keep the run directories (their path is in the JSON).")
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
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": _device_info(),
                           "cpus": os.cpu_count()}
    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    for dev, prec, comp, n in (("cuda", "fp32", "on", args.updates), ("cuda", "bf16", "on", args.updates),
                               ("cuda", "fp32", "off", args.updates), ("cuda", "bf16", "off", args.updates),
                               ("cpu", "fp32", "off", max(50, args.updates // 20))):
        key = f"{dev}_{prec}" + ("_compiled" if comp == "on" else "")
        try:
            rows[key] = round(_sac_updates(dev, prec, n, comp), 1)
        except Exception as e:  # report and go on: one failing row must not hide the others
            rows[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    out["sac_updates_per_s"] = rows
    if not args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        py = sys.executable
        jobs: dict[str, tuple[list[str], float, Path]] = {
            "main_job": ([py, "-m", "roborl", "train", "configs/default.yaml", "device=cuda",
                          f"train.total_steps={args.main_steps}", f"run.dir={tmp}/main"], 300, tmp / "main")}
        ngpu = torch.cuda.device_count()
        ppo = [py, "-m", "roborl", "train", "configs/ppo_halfcheetah.yaml", "device=cuda",
               f"train.total_steps={args.ppo_steps}", "train.eval_every=0", f"run.dir={tmp}/ppo"]
        if ngpu > 1:
            ppo.append(f"--nproc={ngpu}")
        jobs["ppo"] = (ppo, 150, tmp / "ppo")
        if (REPO / "configs/pixels_push_e2e.yaml").exists():
            for seed in range(args.pixel_seeds):
                d = tmp / f"pix{seed}"
                jobs[f"pixels_seed{seed}"] = (
                    [py, "-m", "roborl", "train", "configs/pixels_push_e2e.yaml", "device=cuda", f"run.seed={seed}",
                     f"train.max_minutes={args.pixel_minutes}", f"train.eval_episodes={args.pixel_eval_episodes}",
                     f"run.dir={d}"], 60 * args.pixel_minutes + 150, d)
        else:
            out["pixels"] = {"skipped": "configs/pixels_push_e2e.yaml does not exist yet"}
        # The runs are mostly CPU-bound (env stepping, rendering); with enough cores they run side by side
        # (each row then shares the GPU with the others: see "parallel" in the output).
        parallel = args.parallel if args.parallel is not None else (os.cpu_count() or 1) >= 8
        out["parallel"] = parallel
        started: dict[str, subprocess.Popen] = {}
        for name, (cmd, timeout, d) in jobs.items():
            started[name] = _start(cmd, tmp / f"{name}.log")
            if not parallel:
                out[name] = _finish(started[name], cmd, timeout, d)
        if parallel:
            _wait_all({name: (started[name], timeout) for name, (_, timeout, _) in jobs.items()})
            for name, (cmd, timeout, d) in jobs.items():
                out[name] = _finish(started[name], cmd, timeout, d)
        if args.keep:
            out["run_dirs"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
