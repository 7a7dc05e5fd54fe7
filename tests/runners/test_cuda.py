"""Every learner on CUDA through the real CLI: a short run trains, writes a checkpoint, resumes and
evaluates; the pixel learners update on CUDA. Skipped without a CUDA device (CI has none): run them
on a GPU machine with ``python -m pytest tests/runners/test_cuda.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from roborl.learners import LEARNERS

# ROBORL_TEST_DEVICE=cpu runs the same checks on a CPU (to check the test itself).
DEVICE = os.environ.get("ROBORL_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


def _env(algo: str) -> str:
    if LEARNERS[algo].actions == "discrete":
        return "CartPole-v1"
    return "InvertedPendulum-v5" if algo == "mbpo" else "Pendulum-v1"  # MBPO refuses non-MuJoCo envs


def _args(algo: str, total: int, run_dir: str) -> list[str]:
    spec = LEARNERS[algo]
    sec = spec.section
    args = [f"train.algo={algo}", f"env.id={_env(algo)}", f"device={DEVICE}", f"run.dir={run_dir}",
            f"train.total_steps={total}", "train.eval_every=0", "train.eval_episodes=2", f"train.checkpoint_every={total}"]
    if spec.kind == "off_policy":
        args += [f"{sec}.warmup_steps=100", f"{sec}.batch_size=64"]
        if algo == "mbpo":
            args += ["mbpo.model_train_every=100", "mbpo.model_steps=20", "mbpo.rollout_batch=64", "mbpo.utd=2"]
    else:
        args += [f"{sec}.n_envs=2", f"{sec}.rollout_steps=64"]
        if algo == "ppo":
            args += ["ppo.minibatch_size=64"]
    return args


@pytest.mark.parametrize("algo", sorted(LEARNERS))
def test_short_cuda_run_trains_checkpoints_resumes_and_evaluates(algo: str, tmp_path) -> None:
    run_dir = str(tmp_path / "run")
    for total in (256, 384):  # the second run resumes from the first one's checkpoint
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text("{}\n")
        p = subprocess.run([sys.executable, "-m", "roborl", "train", str(cfg), *_args(algo, total, run_dir)],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
    steps = sorted(d.name for d in (tmp_path / "run" / "checkpoints").iterdir() if d.name.startswith("step_"))
    assert steps[-1].endswith("384"), steps
    p = subprocess.run([sys.executable, "-m", "roborl", "eval", run_dir, "--episodes", "2", "--json", "--device", DEVICE],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert np.isfinite(json.loads(p.stdout.strip().splitlines()[-1])["return_mean"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pixel_sac_end_to_end_update_on_cuda(precision: str) -> None:
    """DrQ: the critic's gradient reaches the encoder on the GPU, the actor's does not."""
    from roborl.batch import Batch
    from roborl.config import build
    from roborl.learners.config import SACConfig
    from roborl.learners.sac import SAC

    spec = {"proprio": (7,), "pixels.front": (64, 64, 3), "pixels.wrist": (64, 64, 3)}
    sac = SAC(spec, 4, build(SACConfig, {"batch_size": 32, "precision": precision}), DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    B = 32

    def obs() -> dict[str, torch.Tensor]:
        return {"proprio": torch.randn(B, 7, device=DEVICE, generator=g),
                **{k: torch.randint(0, 255, (B, 64, 64, 3), device=DEVICE, generator=g, dtype=torch.uint8)
                   for k in ("pixels.front", "pixels.wrist")}}

    b = Batch(obs=obs(), action=torch.rand(B, 4, device=DEVICE, generator=g) * 2 - 1,
              reward=torch.randn(B, device=DEVICE, generator=g), next_obs=obs(),
              discount=torch.full((B,), 0.99, device=DEVICE), weight=torch.ones(B, device=DEVICE),
              index=torch.arange(B, device=DEVICE), is_demo=torch.zeros(B, dtype=torch.bool, device=DEVICE))
    before = {n: p.detach().clone() for n, p in sac.named_parameters() if "encoder" in n}
    assert before, "no encoder parameters"
    m, td = sac.update(b)
    assert td.shape == (B,) and bool(torch.isfinite(td).all())
    assert all(bool(torch.isfinite(v).all()) for v in m.values())
    assert any(not torch.equal(before[n], p) for n, p in sac.named_parameters() if n in before)
    a = sac.as_policy().act({k: v[:3].cpu().numpy() for k, v in obs().items()}, deterministic=True)
    assert np.asarray(a).shape == (3, 4) and np.all(np.abs(np.asarray(a)) <= 1)
