"""`roborl encoder pretrain`: BC pretraining of the image encoder on a real store's demo frames."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from roborl.config import build
from roborl.errors import UsageError
from roborl.learners import encoders as E
from roborl.learners.config import EncoderPretrainConfig, SACConfig
from roborl.learners.sac import SAC
from roborl.runners.pretrain import load_demo_frames, pretrain_encoder
from roborl.store import ReplayStore

SIZE = 16
ARCH = {"channels": 8, "layers": 2, "feature_dim": 8}


def _obs(rng: np.random.Generator) -> tuple[dict, float]:
    """A bright column at x in [-1, 1] in the front camera; the expert's action is x (seen only in the image)."""
    x = float(rng.uniform(-1, 1))
    front = np.zeros((SIZE, SIZE, 3), np.uint8)
    front[:, int(round((x + 1) / 2 * (SIZE - 1))), :] = 255
    wrist = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    return {"proprio": rng.standard_normal(3).astype(np.float32), "pixels": {"front": front, "wrist": wrist}}, x


def _store(root: Path, episodes: int = 6, length: int = 10, pixels: bool = True) -> Path:
    img = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    vec = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    space = gym.spaces.Dict({"proprio": vec, "pixels": gym.spaces.Dict({"front": img, "wrist": img})}) if pixels else vec
    st = ReplayStore.open_or_create(root, env_id="test/dot", observation_space=space,
                                    action_space=gym.spaces.Box(-1, 1, (1,), np.float32))
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        o, x = _obs(rng)
        st.start_episode(o if pixels else o["proprio"], "demo")
        for t in range(length):
            o2, x2 = _obs(rng)
            st.add_step(action=np.array([x], np.float32), reward=0.0, next_obs=o2 if pixels else o2["proprio"],
                        terminated=False, truncated=t == length - 1)
            x = x2
    st.close()
    return root


def test_load_demo_frames_reads_every_demo_step_and_resolves_camera_names(tmp_path: Path) -> None:
    s = _store(tmp_path / "s")
    d = load_demo_frames([s], cameras=["front"])
    assert len(d) == 60 and set(d.obs) == {"pixels.front", "proprio"}
    assert d.spec == {"pixels.front": (SIZE, SIZE, 3), "proprio": (3,)}
    assert d.episode.tolist() == np.repeat(np.arange(6), 10).tolist()
    # The action of a step is the column position of that step's front frame.
    col = d.obs["pixels.front"][:, 0, :, 0].argmax(1)
    np.testing.assert_allclose((col / (SIZE - 1)) * 2 - 1, d.action[:, 0], atol=1 / (SIZE - 1))
    both = load_demo_frames([s, s])  # two stores: episodes numbered on
    assert len(both) == 120 and int(both.episode.max()) == 11 and set(both.obs) == {"pixels.front", "pixels.wrist",
                                                                                     "proprio"}


def test_pretrain_learns_the_image_and_sac_loads_it_frozen(tmp_path: Path) -> None:
    s = _store(tmp_path / "s", episodes=10)
    short = pretrain_encoder([s], tmp_path / "e0.safetensors", build(EncoderPretrainConfig, {**ARCH, "steps": 1}))
    meta = pretrain_encoder([s], tmp_path / "e.safetensors",
                            build(EncoderPretrainConfig, {**ARCH, "steps": 300, "lr": 1e-3, "pad": 1,
                                                          "hidden": [64], "val_episodes": 2}))
    assert meta["train_bc_loss"] < 0.5 * short["train_bc_loss"], (short, meta)  # it learns x from the image
    assert meta["val_steps"] == 20 and meta["val_bc_loss"] is not None
    saved = E.read_encoder_meta(tmp_path / "e.safetensors")
    assert saved["objective"] == "bc_random_shift" and saved["stores"][0]["steps"] == 100
    spec = {"proprio": (3,), "pixels.front": (SIZE, SIZE, 3), "pixels.wrist": (SIZE, SIZE, 3)}
    sac = SAC(spec, 1, build(SACConfig, {"hidden": [16], "encoder": {**ARCH, "weights": str(tmp_path / "e.safetensors")}}))
    assert sac.frozen and sac.encoder is not None and not any(p.requires_grad for p in sac.encoder.parameters())
    from safetensors.torch import load_file

    ref = load_file(str(tmp_path / "e.safetensors"))
    assert all(torch.equal(ref[k], v) for k, v in sac.encoder.state_dict().items())


def test_pretrain_bad_input_is_one_line(tmp_path: Path) -> None:
    s = _store(tmp_path / "s", episodes=2)
    flat = _store(tmp_path / "flat", episodes=1, pixels=False)
    cfg = build(EncoderPretrainConfig, {**ARCH, "steps": 1})
    cases = [([tmp_path / "missing"], {}, "store not found"), ([flat], {}, "no camera observations"),
             ([s], {"cameras": ["top"]}, r"camera 'top' is not in store .* \(its cameras: front, wrist\)")]
    for stores, kw, msg in cases:
        with pytest.raises(UsageError, match=msg) as e:
            pretrain_encoder(stores, tmp_path / "x.safetensors", build(EncoderPretrainConfig, {**ARCH, "steps": 1, **kw}))
        assert "\n" not in str(e.value)
    pretrain_encoder([s], tmp_path / "front.safetensors", build(EncoderPretrainConfig, {**ARCH, "steps": 1,
                                                                                        "cameras": ["front"]}))
    with pytest.raises(UsageError, match=r"--init: .* encodes inputs"):  # one camera's encoder, two cameras here
        pretrain_encoder([s], tmp_path / "x.safetensors", cfg, init=tmp_path / "front.safetensors")
    pretrain_encoder([s], tmp_path / "wide.safetensors", build(EncoderPretrainConfig, {**ARCH, "steps": 1,
                                                                                       "channels": 4}))
    with pytest.raises(UsageError, match=r"--init: .* does not fit sac.encoder .*'channels': 4.*size mismatch"):
        pretrain_encoder([s], tmp_path / "x.safetensors", cfg, init=tmp_path / "wide.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_pretrain_info_and_exit_codes(tmp_path: Path) -> None:
    s = _store(tmp_path / "s", episodes=2)
    out = tmp_path / "enc" / "e.safetensors"

    def cli(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "roborl.cli", "encoder", *a], capture_output=True, text=True,
                              timeout=300)

    r = cli("pretrain", "--store", str(s), "--out", str(out), "--threads", "1", "steps=3", "channels=8", "layers=2")
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "saved" in r.stdout
    i = cli("info", str(out))
    assert i.returncode == 0 and '"input_shapes"' in i.stdout
    for args, msg in [(("pretrain", "--store", str(tmp_path / "nope"), "--out", str(out)), "store not found"),
                      (("pretrain", "--store", str(s), "--out", str(out), "cameras=[top]"), "camera 'top'"),
                      (("pretrain", "--store", str(s), "--out", str(out), "stepz=3"), "stepz"),
                      (("info", str(tmp_path / "nope.safetensors")), "no such file")]:
        r = cli(*args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
