"""Image-policy export: a pixel SAC policy (uint8 cameras + proprio, encoder inside) to ONNX and TorchScript.

* In process (no rendering): SAC learners with per-camera and shared encoders, with and without a residual
  base that has its own encoder; the exported modules equal ``learner.act`` within 1e-5.
* Through the CLI (rendering: skips without a GL backend): a tiny end-to-end pixel SAC run on
  roborl/Push-v0, exported to both formats and compared with roborl eval's policy on 1,000 recorded
  observations with onnxruntime and torch.jit.load.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5
SPEC = {"pixels.front": (24, 32, 3), "pixels.wrist": (24, 32, 3), "proprio": (5,)}


def _learner(residual: bool, shared: bool):
    from roborl.learners.config import EncoderConfig, SACConfig
    from roborl.learners.sac import SAC

    torch.manual_seed(0)
    cfg = SACConfig(hidden=(32, 32), residual=residual, residual_beta=0.5, precision="fp32",
                    encoder=EncoderConfig(channels=8, layers=2, feature_dim=16, shared=shared, pad=2))
    learner = SAC(dict(SPEC), 3, cfg, "cpu").eval()
    with torch.no_grad():  # non-trivial weights and normaliser everywhere (fresh heads start near zero)
        for p in learner.parameters():
            p.add_(0.3 * torch.randn_like(p))
        learner.normalizer.mean.copy_(torch.randn(5))
        learner.normalizer.std.copy_(torch.rand(5) + 0.5)
    return learner


def _obs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pixels.front": rng.integers(0, 256, (n, 24, 32, 3), dtype=np.uint8),
            "pixels.wrist": rng.integers(0, 256, (n, 24, 32, 3), dtype=np.uint8),
            "proprio": rng.normal(size=(n, 5)).astype(np.float32)}


@pytest.mark.parametrize("residual,shared", [(False, False), (True, False), (False, True), (True, True)])
def test_pixel_core_equals_learner_act_in_both_formats(tmp_path: Path, residual: bool, shared: bool) -> None:
    from roborl.export.policy import ExportedPolicy, PolicyCore, _learner_parts, pixel_policy_core
    from roborl.export.writers import load_runner, write_onnx, write_torchscript
    from roborl.learners.sac import SACPolicy

    learner = _learner(residual, shared)
    assert (learner.base_encoder is not None) == residual
    policy = SACPolicy(learner)
    norm, actor, squash, base, beta, _obs_dim, act_dim = _learner_parts(policy, "sac")
    lo, hi = -np.ones(3), np.ones(3)
    core = PolicyCore(None, None, actor, squash, base, beta, np.zeros(3), np.ones(3), lo, hi).eval()
    keys = list(SPEC)
    dtypes = {"pixels.front": "uint8", "pixels.wrist": "uint8", "proprio": "float32"}
    pix = pixel_policy_core(learner, core, keys, dtypes)
    exp = ExportedPolicy(core, 5, act_dim, keys, {k: list(v) for k, v in SPEC.items()}, {"image_inputs": True},
                         pix, dtypes)
    obs = _obs(200)
    ref = policy.act(obs, deterministic=True).astype(np.float64)
    assert float(np.abs(ref).max()) > 1e-2 and float(ref.std(0).min()) > 1e-3  # varied, not a constant policy
    write_onnx(exp, tmp_path / "p.onnx")
    write_torchscript(exp, tmp_path / "p.pt")
    for f in ("p.onnx", "p.pt"):
        got = load_runner(tmp_path / f, threads=1)(obs)
        assert got.shape == (200, 3) and got.dtype == np.float32
        assert float(np.abs(got - ref).max()) <= TOL, f
    # A residual base with its own encoder reads different features: dropping it must change the actions.
    if residual:
        pix_wrong = pixel_policy_core(learner, core, keys, dtypes)
        pix_wrong.use_base_encoder = False
        with torch.no_grad():
            wrong = pix_wrong([torch.as_tensor(obs[k]) for k in keys]).numpy()
        assert float(np.abs(wrong - ref).max()) > 1e-3
    # The ONNX graph takes the cameras as uint8 and B is dynamic.
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(tmp_path / "p.onnx"))
    types = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    assert types == {"pixels.front": onnx.TensorProto.UINT8, "pixels.wrist": onnx.TensorProto.UINT8,
                     "proprio": onnx.TensorProto.FLOAT}
    run = load_runner(tmp_path / "p.onnx")
    one = {k: v[:1] for k, v in obs.items()}
    np.testing.assert_allclose(run(one), ref[:1], atol=TOL)


def _roborl(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    code = "import sys\nfrom roborl.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=dict(env, ROBORL_QUIET="1"),
                          capture_output=True, text=True, timeout=timeout)


PIXEL_RUN = ["env.id=roborl/Push-v0", "env.kwargs={obs_mode: proprio+pixels, image_size: 32, cameras: [front, wrist]}",
             "train.algo=sac", "train.eval_every=0", "train.eval_episodes=1", "device=cpu", "train.threads=1",
             "sac.hidden=[32,32]", "sac.batch_size=16", "sac.warmup_steps=60", "sac.precision=fp32",
             "sac.encoder.channels=8", "sac.encoder.layers=2", "sac.encoder.feature_dim=16",
             "train.total_steps=120", "train.checkpoint_every=120"]


def test_pixel_sac_run_exports_with_parity_on_1000_recorded_observations(tmp_path: Path, gl_env: dict[str, str],
                                                                         gl_in_process: str) -> None:
    pytest.importorskip("onnxruntime")
    from roborl.export.parity import record_observations, reference_actions
    from roborl.export.writers import load_runner, read_meta

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("run: {name: export-pixels, seed: 0}\n")
    run = tmp_path / "run"
    p = _roborl("train", str(cfg), f"run.dir={run}", *PIXEL_RUN, env=gl_env)
    assert p.returncode == 0, p.stderr[-3000:]
    obs = record_observations(run, n=1000)  # renders in this process (gl_in_process)
    ref = reference_actions(run, obs)
    assert set(obs) == {"proprio", "pixels.front", "pixels.wrist"}
    assert obs["pixels.front"].dtype == np.uint8 and obs["pixels.front"].shape == (1000, 32, 32, 3)
    assert ref.shape == (1000, 4) and float(ref.std(0).max()) > 1e-3
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"pix.{fmt}"
        p = _roborl("export", str(run), "--format", fmt, "--out", str(out), env=gl_env)
        assert p.returncode == 0, p.stderr[-3000:]
        summary = json.loads(p.stdout)
        assert "image_encoder" in summary["stages"]
        got = load_runner(out, threads=1)(obs)
        assert float(np.abs(got - ref).max()) <= TOL, fmt
        meta = read_meta(out)
        assert meta["image_inputs"] is True and meta["input_dtypes"]["pixels.front"] == "uint8"
        assert meta["inputs"]["pixels.wrist"] == [None, 32, 32, 3]
    # torch.jit.load directly, called as module(obs) with a dict of tensors.
    mod = torch.jit.load(str(tmp_path / "pix.torchscript"))
    a = mod({k: torch.as_tensor(v[:7]) for k, v in obs.items()})
    np.testing.assert_allclose(a.numpy(), ref[:7], atol=TOL)
