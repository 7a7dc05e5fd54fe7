"""The keypoint encoder (spatial softmax) and the deep spatial autoencoder objective of `roborl encoder pretrain`."""
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
from roborl.runners.pretrain import pretrain_encoder
from roborl.store import ReplayStore

SIZE = 16
KP = {"channels": 8, "layers": 2, "feature_dim": 8, "arch": "keypoints"}


def test_spatial_softmax_is_the_expected_coordinates_of_one_bright_spot() -> None:
    h, w = 9, 13
    ss = E.SpatialSoftmax(h, w, learn_temperature=False)
    x = torch.zeros(2, 3, h, w)
    spots = [[(0, 0), (4, 6), (8, 12)], [(2, 11), (7, 1), (4, 3)]]  # (row, col) per sample and channel
    for b, row in enumerate(spots):
        for k, (r, c) in enumerate(row):
            x[b, k, r, c] = 100.0  # softmax ~ one-hot on the spot
    out = ss(x)
    assert out.shape == (2, 6)
    want = torch.tensor([[v for r, c in row for v in (-1 + 2 * c / (w - 1), -1 + 2 * r / (h - 1))] for row in spots])
    torch.testing.assert_close(out, want, atol=1e-4, rtol=0)
    # A flat map has its expectation at the centre; two equal spots at their midpoint.
    flat = ss(torch.zeros(1, 1, h, w))
    torch.testing.assert_close(flat, torch.zeros(1, 2), atol=1e-6, rtol=0)
    two = torch.zeros(1, 1, h, w)
    two[0, 0, 4, 0] = two[0, 0, 4, 12] = 100.0
    torch.testing.assert_close(ss(two), torch.zeros(1, 2), atol=1e-4, rtol=0)


def test_keypoint_encoder_shapes_and_odd_feature_dim_refused() -> None:
    spec = {"pixels.front": (SIZE, SIZE, 3), "pixels.wrist": (SIZE, SIZE, 3), "proprio": (3,)}
    enc = E.PixelEncoder(spec, channels=8, layers=2, feature_dim=8, arch="keypoints")
    with torch.no_grad():
        out = enc({k: torch.randint(0, 256, (5, SIZE, SIZE, 3), dtype=torch.uint8) for k in enc.keys})
    assert out.shape == (5, 16) and float(out.abs().max()) <= 1.0  # coordinates in [-1, 1]
    with pytest.raises(ValueError, match="even"):
        E.PixelEncoder(spec, feature_dim=7, arch="keypoints")
    with pytest.raises(ValueError, match="arch"):
        E.PixelEncoder(spec, arch="resnet")


def _dot(rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """A bright 2x2 square at a random place in the front camera (what the keypoints must find); noise wrist."""
    r, c = rng.integers(0, SIZE - 1, 2)
    front = np.full((SIZE, SIZE, 3), 40, np.uint8)
    front[r:r + 2, c:c + 2] = 255
    wrist = rng.integers(0, 64, (SIZE, SIZE, 3), np.uint8)
    return ({"proprio": rng.standard_normal(3).astype(np.float32), "pixels": {"front": front, "wrist": wrist}},
            np.array([c + 0.5, r + 0.5], np.float64))


def _store(root: Path, episodes: int = 8, length: int = 10) -> tuple[Path, np.ndarray]:
    img = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    space = gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                             "pixels": gym.spaces.Dict({"front": img, "wrist": img})})
    st = ReplayStore.open_or_create(root, env_id="test/dot", observation_space=space,
                                    action_space=gym.spaces.Box(-1, 1, (1,), np.float32))
    rng = np.random.default_rng(0)
    where = []
    for _ in range(episodes):
        o, p = _dot(rng)
        st.start_episode(o, "demo")
        for t in range(length):
            where.append(p)
            o, p = _dot(rng)
            # Random actions: the autoencoder must not need them.
            st.add_step(action=rng.uniform(-1, 1, 1).astype(np.float32), reward=0.0, next_obs=o, terminated=False,
                        truncated=t == length - 1)
    st.close()
    return root, np.stack(where)


def test_spatial_autoencoder_loss_drops_and_keypoints_locate_the_dot(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    s, where = _store(tmp_path / "s", episodes=12)
    base = {**KP, "objective": "autoencoder", "recon_size": 8, "hidden": [64], "lr": 3e-3, "pad": 0}
    short = pretrain_encoder([s], tmp_path / "e0.safetensors", build(EncoderPretrainConfig, {**base, "steps": 1}))
    meta = pretrain_encoder([s], tmp_path / "e.safetensors",
                            build(EncoderPretrainConfig, {**base, "steps": 400, "val_episodes": 2, "eval_every": 100}))
    assert meta["objective"] == "spatial_autoencoder"
    assert meta["train_recon_loss"] < 0.6 * short["train_recon_loss"], (short, meta)
    assert len(meta["val_curve"]) == 4 and meta["best_step"] in (100, 200, 300, 400)
    assert meta["val_recon_loss"] == pytest.approx(min(v for _, v in meta["val_curve"]), rel=1e-4)
    # A linear read-out of the front camera's keypoints gives the dot's position (it is all that varies there).
    enc = E.load_encoder(tmp_path / "e.safetensors")
    rows = ReplayStore.open(s, mode="r")
    try:
        ep = rows.episodes("demo")
        cols = rows.read_rows("demo", 0, int(ep[-1, 0] + ep[-1, 1]), ["obs.pixels.front", "obs.pixels.wrist"])
    finally:
        rows.close()
    with torch.no_grad():
        f = enc({k: torch.from_numpy(cols[f"obs.{k}"]) for k in enc.keys}).numpy()[:, :8]  # front keypoints
    x = np.concatenate([f, np.ones((len(f), 1))], 1)
    w, *_ = np.linalg.lstsq(x, where, rcond=None)
    r2 = 1 - ((x @ w - where) ** 2).sum(0) / ((where - where.mean(0)) ** 2).sum(0)
    assert (r2 > 0.6).all(), r2


def test_keypoint_file_round_trip_metadata_and_sac_loads_it_frozen(tmp_path: Path) -> None:
    s, _ = _store(tmp_path / "s", episodes=3)
    cfg = build(EncoderPretrainConfig, {**KP, "objective": "autoencoder", "steps": 2, "recon_size": 4, "hidden": [8]})
    pretrain_encoder([s], tmp_path / "kp.safetensors", cfg)
    meta = E.read_encoder_meta(tmp_path / "kp.safetensors")
    assert meta["arch"] == "keypoints" and meta["objective"] == "spatial_autoencoder" and meta["feature_dim"] == 8
    assert meta["config"]["recon_size"] == 4 and meta["input_shapes"]["pixels.front"] == [3, SIZE, SIZE]
    enc = E.load_encoder(tmp_path / "kp.safetensors")
    assert enc.arch == "keypoints" and enc.out_dim == 16
    spec = {"proprio": (3,), "pixels.front": (SIZE, SIZE, 3), "pixels.wrist": (SIZE, SIZE, 3)}
    sac = SAC(spec, 1, build(SACConfig, {"hidden": [16], "encoder": {"channels": 8, "layers": 2, "feature_dim": 8,
                                                                     "arch": "keypoints",
                                                                     "weights": str(tmp_path / "kp.safetensors")}}))
    assert sac.frozen and sac.encoder is not None and sac.feat_dim == 16 + 3
    obs = {k: torch.randint(0, 256, (4, SIZE, SIZE, 3), dtype=torch.uint8) for k in enc.keys}
    with torch.no_grad():
        torch.testing.assert_close(sac.encoder(obs), enc(obs))
    # BC through the keypoint bottleneck writes a keypoint file as well; old conv files still load as conv.
    pretrain_encoder([s], tmp_path / "kpbc.safetensors", build(EncoderPretrainConfig, {**KP, "steps": 2}))
    assert E.read_encoder_meta(tmp_path / "kpbc.safetensors")["arch"] == "keypoints"


def test_mismatched_keypoint_files_are_refused_in_one_line(tmp_path: Path) -> None:
    s, _ = _store(tmp_path / "s", episodes=2)
    pretrain_encoder([s], tmp_path / "kp.safetensors",
                     build(EncoderPretrainConfig, {**KP, "objective": "autoencoder", "steps": 1, "recon_size": 4}))
    spec = {"proprio": (3,), "pixels.front": (SIZE, SIZE, 3), "pixels.wrist": (SIZE, SIZE, 3)}
    arch = {"channels": 8, "layers": 2, "feature_dim": 8}
    cases = [({**arch}, r"is a 'keypoints' encoder, this needs 'conv' \(sac.encoder.arch\)"),
             ({**arch, "arch": "keypoints", "feature_dim": 12}, r"does not fit sac.encoder .*size mismatch"),
             ({**arch, "arch": "keypoints", "downsample": 2}, r"does not fit sac.encoder: the file has \{'downsample': 1\}")]
    for enc_cfg, msg in cases:
        with pytest.raises(UsageError, match=msg) as e:
            SAC(spec, 1, build(SACConfig, {"hidden": [16], "encoder": {**enc_cfg, "weights": str(tmp_path / "kp.safetensors")}}))
        assert "\n" not in str(e.value)
    small = {"proprio": (3,), "pixels.front": (8, 8, 3), "pixels.wrist": (8, 8, 3)}
    with pytest.raises(UsageError, match=r"encodes inputs .*this needs") as e:
        SAC(small, 1, build(SACConfig, {"hidden": [16], "encoder": {**arch, "arch": "keypoints",
                                                                    "weights": str(tmp_path / "kp.safetensors")}}))
    assert "\n" not in str(e.value)
    for kw, msg in [({"objective": "autoencoder", "arch": "conv"}, "set arch=keypoints"),
                    ({"arch": "keypoints", "feature_dim": 7}, "even number"),
                    ({"eval_every": 5}, "needs held-out episodes")]:
        with pytest.raises(UsageError, match=msg) as e:
            pretrain_encoder([s], tmp_path / "x.safetensors", build(EncoderPretrainConfig, {**KP, "steps": 1, **kw}))
        assert "\n" not in str(e.value)


def test_cli_autoencoder_objective_and_bad_choice_exit_2(tmp_path: Path) -> None:
    s, _ = _store(tmp_path / "s", episodes=2)
    out = tmp_path / "kp.safetensors"

    def cli(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "roborl.cli", "encoder", "pretrain", "--store", str(s), "--out",
                               str(out), "--threads", "1", *a], capture_output=True, text=True, timeout=300)

    r = cli("steps=2", "objective=autoencoder", "arch=keypoints", "channels=8", "layers=2", "feature_dim=8",
            "recon_size=4")
    assert r.returncode == 0 and "spatial_autoencoder (keypoints)" in r.stdout and "recon loss" in r.stdout, r.stderr
    for args, msg in [(("objective=autoencoder",), "arch=keypoints"), (("objective=vae",), "objective")]:
        r = cli(*args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_foreground_weight_counts_only_pixels_off_the_background() -> None:
    spec = {"pixels.front": (SIZE, SIZE, 3), "proprio": (3,)}
    torch.manual_seed(0)
    plain = E.SpatialAEPretrainer(spec, channels=4, layers=1, feature_dim=4, recon_size=SIZE, hidden=(8,), pad=0)
    torch.manual_seed(0)
    fg = E.SpatialAEPretrainer(spec, channels=4, layers=1, feature_dim=4, recon_size=SIZE, hidden=(8,), pad=0,
                               fg_weight=9.0)
    bg = torch.full((6, SIZE, SIZE, 3), 40, dtype=torch.uint8)
    obs = {"pixels.front": bg.clone(), "proprio": torch.zeros(6, 3)}
    fg.set_background(obs)
    # Frames equal to the background: no pixel is foreground, so the weighted loss is the plain one.
    torch.testing.assert_close(fg.loss(obs), plain.loss(obs))
    obs["pixels.front"][:, 3:5, 3:5] = 255  # a 2x2 spot: 4 of 256 pixels get weight 1 + 9
    with torch.no_grad():
        ims = fg.encoder.prepare(obs)
        recon = fg.decoders["pixels_front"](torch.cat([fg.encoder.encode(ims), fg.normalizer(fg.vector(obs))], -1))
        err = (recon - fg.target(ims[0])).pow(2).view(6, 3, SIZE, SIZE)
        w = torch.ones(SIZE, SIZE)
        w[3:5, 3:5] = 10.0
        torch.testing.assert_close(fg.loss(obs), (err * w).mean())


def test_sac_refuses_an_odd_keypoint_feature_dim_in_one_line() -> None:
    spec = {"proprio": (3,), "pixels.front": (SIZE, SIZE, 3)}
    with pytest.raises(UsageError, match=r"sac.encoder.feature_dim: .*even number; got 7") as e:
        SAC(spec, 1, build(SACConfig, {"hidden": [16], "encoder": {"arch": "keypoints", "feature_dim": 7}}))
    assert "\n" not in str(e.value)


def _episode_store(root: Path, episodes: int, length: int = 8) -> tuple[Path, np.ndarray, np.ndarray]:
    """Front camera: a dot fixed for the whole episode (a goal marker the reset placed) and a second dot that
    jumps every step (the moving arm). Returns the store, the fixed dot's and the moving dot's (x, y) per step."""
    img = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    space = gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                             "pixels": gym.spaces.Dict({"front": img})})
    st = ReplayStore.open_or_create(root, env_id="test/goal", observation_space=space,
                                    action_space=gym.spaces.Box(-1, 1, (1,), np.float32))
    rng = np.random.default_rng(1)
    fixed, moving = [], []

    def frame(g: np.ndarray) -> tuple[dict, np.ndarray]:
        m = rng.integers(0, SIZE - 1, 2)
        front = np.full((SIZE, SIZE, 3), 40, np.uint8)
        front[g[0]:g[0] + 2, g[1]:g[1] + 2] = (255, 60, 60)
        front[m[0]:m[0] + 2, m[1]:m[1] + 2] = (60, 60, 255)
        return {"proprio": rng.standard_normal(3).astype(np.float32), "pixels": {"front": front}}, m

    for _ in range(episodes):
        g = rng.integers(0, SIZE - 1, 2)
        o, m = frame(g)
        st.start_episode(o, "demo")
        for t in range(length):
            fixed.append(g[::-1] + 0.5)
            moving.append(m[::-1] + 0.5)
            o, m = frame(g)
            st.add_step(action=rng.uniform(-1, 1, 1).astype(np.float32), reward=0.0, next_obs=o, terminated=False,
                        truncated=t == length - 1)
    st.close()
    return root, np.stack(fixed), np.stack(moving)


def test_contrastive_loss_masks_other_pairs_of_the_same_episode() -> None:
    torch.manual_seed(0)
    m = E.EpisodeContrastivePretrainer({"pixels.front": (SIZE, SIZE, 3), "proprio": (3,)}, **KP, pad=0)
    obs = {"pixels.front": torch.randint(0, 255, (4, SIZE, SIZE, 3), dtype=torch.uint8), "proprio": torch.zeros(4, 3)}
    # Rows 0-1 and rows 2-3 are two episodes: each row's other-episode rows are its only negatives, so with
    # identical frames everywhere the loss is log(3) (chance among 3 candidates), not log(4).
    same = {k: v[:1].expand_as(v).clone() for k, v in obs.items()}
    with torch.no_grad():
        assert float(m.loss(same, same, torch.tensor([0, 0, 1, 1]))) == pytest.approx(np.log(3), rel=1e-5)
        assert float(m.loss(same, same, torch.tensor([0, 1, 2, 3]))) == pytest.approx(np.log(4), rel=1e-5)


def test_contrastive_pretraining_finds_what_the_episode_fixed_and_ignores_what_moves(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    s, fixed, moving = _episode_store(tmp_path / "s", episodes=40)
    base = {**KP, "objective": "contrastive", "hidden": [64], "lr": 3e-3, "pad": 1, "batch_size": 32}
    short = pretrain_encoder([s], tmp_path / "e0.safetensors", build(EncoderPretrainConfig, {**base, "steps": 1}))
    meta = pretrain_encoder([s], tmp_path / "e.safetensors",
                            build(EncoderPretrainConfig, {**base, "steps": 300, "val_episodes": 4, "eval_every": 100}))
    assert meta["objective"] == "episode_contrastive" and len(meta["val_curve"]) == 3
    assert meta["train_nce_loss"] < 0.5 * short["train_nce_loss"], (short, meta)
    enc = E.load_encoder(tmp_path / "e.safetensors")
    rows = ReplayStore.open(s, mode="r")
    try:
        ep = rows.episodes("demo")
        cols = rows.read_rows("demo", 0, int(ep[-1, 0] + ep[-1, 1]), ["obs.pixels.front"])
    finally:
        rows.close()
    with torch.no_grad():
        f = enc({"pixels.front": torch.from_numpy(cols["obs.pixels.front"])}).numpy()
    x = np.concatenate([f, np.ones((len(f), 1))], 1)

    def r2(y: np.ndarray) -> np.ndarray:
        w, *_ = np.linalg.lstsq(x, y, rcond=None)
        return 1 - ((x @ w - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)

    # The keypoints say where the episode's fixed dot is, far better than where the jumping one is.
    assert (r2(fixed) > 0.5).all() and (r2(moving) < 0.2).all(), (r2(fixed), r2(moving))
