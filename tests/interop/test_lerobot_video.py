"""LeRobot v3 camera streams: mp4 files under videos/, the `video` feature with its codec info, round trips
within codec tolerance (h264, av1) and bit-exact (lossless), and one-line errors naming the camera or field."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from roborl.store import ReplayStore

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("imageio_ffmpeg")

FPS = 10
CAMS = {"front": (48, 64), "wrist": (32, 32)}


def _frame(h: int, w: int, t: float, seed: int) -> np.ndarray:
    """A smooth camera-like frame: colour gradients plus a moving disc (what codecs are built for)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 60 + 120 * x / w + 20 * np.sin(t + seed)
    g = 40 + 150 * y / h
    b = 128 + 60 * np.cos(0.3 * t + x / 9.0)
    cx, cy = (w / 2) + (w / 3) * np.cos(0.7 * t + seed), (h / 2) + (h / 3) * np.sin(0.7 * t)
    disc = (x - cx) ** 2 + (y - cy) ** 2 < (min(h, w) / 6) ** 2
    img = np.stack([r, g, b], -1)
    img[disc] = (230, 40, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def _obs_space() -> gym.spaces.Dict:
    return gym.spaces.Dict({"proprio": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
                            "pixels": gym.spaces.Dict({k: gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
                                                       for k, (h, w) in CAMS.items()})})


def _make_store(path: Path) -> Path:
    """Proprio + two cameras, both partitions, terminated / truncated / interrupted episodes."""
    st = ReplayStore.create(path, env_id="synthetic/Cams-v0", observation_space=_obs_space(),
                            action_space=gym.spaces.Box(-1, 1, (2,), np.float32), chunk_rows=16)
    rng = np.random.default_rng(0)
    t = 0.0

    def obs() -> dict:
        nonlocal t
        t += 0.37
        return {"proprio": rng.normal(size=4).astype(np.float32),
                "pixels": {k: _frame(h, w, t, i) for i, (k, (h, w)) in enumerate(CAMS.items())}}

    for part, T, end in (("demo", 6, "term"), ("demo", 11, "trunc"), ("online", 4, "interrupt"), ("online", 9, "term")):
        st.start_episode(obs(), part)
        for s in range(T):
            st.add_step(action=rng.uniform(-1, 1, 2).astype(np.float32), reward=float(rng.normal()), next_obs=obs(),
                        terminated=end == "term" and s == T - 1, truncated=end == "trunc" and s == T - 1,
                        is_success=bool(s % 3 == 0))
        if end == "interrupt":
            st.end_episode()
    st.close()
    return path


@pytest.fixture()
def cam_store(tmp_path: Path) -> Path:
    return _make_store(tmp_path / "cams")


def _rows(path: Path) -> dict[str, np.ndarray]:
    st = ReplayStore.open(path, mode="r")
    try:
        out = {}
        for part in ("demo", "online"):
            r = st.read_rows(part, st.head_row(part), st.end_row(part))
            for k, v in r.items():
                out[k] = np.concatenate([out[k], v]) if k in out else v
        out["_episodes"] = np.concatenate([st.episodes("demo"), st.episodes("online")])[:, 1:]
        return out
    finally:
        st.close()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("codec,want_codec", [("h264", "h264"), ("av1", "av1")])
def test_lossy_round_trip_within_codec_tolerance_and_v3_video_layout(cam_store: Path, tmp_path: Path, store_cli,
                                                                     codec: str, want_codec: str) -> None:
    out = tmp_path / "lr"
    p = store_cli("export", str(cam_store), "--format", "lerobot", "--out", str(out), "--fps", str(FPS),
                  "--video-codec", codec)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["cameras"] == ["observation.images.front", "observation.images.wrist"] and res["frames"] == 30

    info = json.loads((out / "meta/info.json").read_text())
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    for cam, (h, w) in CAMS.items():
        f = info["features"][f"observation.images.{cam}"]
        assert f["dtype"] == "video" and f["shape"] == [h, w, 3] and f["names"] == ["height", "width", "channels"]
        vi = f["info"]
        assert vi["video.codec"] == want_codec and vi["video.pix_fmt"] == "yuv420p" and vi["video.fps"] == FPS
        assert (vi["video.height"], vi["video.width"], vi["video.channels"]) == (h, w, 3)
        assert (out / f"videos/observation.images.{cam}/chunk-000/file-000.mp4").is_file()
    # Camera frames are not parquet columns; proprio is.
    table = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert not [c for c in table.column_names if "images" in c] and "observation.proprio" in table.column_names
    # meta/episodes: v3 video locators, episodes back to back in one file.
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    t0 = 0.0
    for e in eps:
        k = "videos/observation.images.front/"
        assert e[k + "chunk_index"] == 0 and e[k + "file_index"] == 0
        assert e[k + "from_timestamp"] == pytest.approx(t0) and e[k + "to_timestamp"] == pytest.approx(t0 + e["length"] / FPS)
        t0 += e["length"] / FPS
        assert len(e["stats/observation.images.front/mean"]) == 3  # per channel, [3, 1, 1]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert 0.0 <= np.min(stats["observation.images.front"]["min"]) <= np.max(stats["observation.images.front"]["max"]) <= 1.0

    p = store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "back"))
    assert p.returncode == 0, p.stderr
    a, b = _rows(cam_store), _rows(tmp_path / "back")
    assert set(a) == set(b)
    for k in a:
        if "pixels" in k:
            continue
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k  # low-dim: bit-exact
    for cam in CAMS:
        x, y = a[f"obs.pixels.{cam}"], b[f"obs.pixels.{cam}"]
        assert x.shape == y.shape and x.dtype == y.dtype == np.uint8
        assert not np.array_equal(x, y)  # lossy really ran through the codec
        # Codec tolerance on these small frames with a sharp-edged disc (4:2:0 chroma halves its colour edges):
        # h264 CRF 18 and av1 CRF 30 give a mean |error| of 3-5 levels and 28-31 dB PSNR; the frame one step
        # off gives ~21 dB, so the bound also proves the frames line up with their rows.
        assert float(np.abs(x.astype(int) - y.astype(int)).mean()) < 6.0, cam
        psnr = [_psnr(x[i], y[i]) for i in range(len(x))]
        shifted = [_psnr(x[i], y[i + 1]) for i in range(len(x) - 1)]
        assert min(psnr) > 22.0 and np.mean(psnr) > 26.0 > np.mean(shifted) + 3.0, (cam, min(psnr), np.mean(shifted))
        # next_obs: the next frame inside an episode, the raw final frame at each episode's end.
        ends = np.cumsum(a["_episodes"][:, 0]) - 1
        nx, ny = a[f"next_obs.pixels.{cam}"], b[f"next_obs.pixels.{cam}"]
        np.testing.assert_array_equal(nx[ends], ny[ends])
        assert min(_psnr(nx[i], ny[i]) for i in range(len(nx))) > 22.0


def test_lossless_round_trip_is_bit_exact_including_frames(cam_store: Path, tmp_path: Path, store_cli) -> None:
    out = tmp_path / "lr"
    p = store_cli("export", str(cam_store), "--format", "lerobot", "--out", str(out), "--fps", str(FPS),
                  "--video-codec", "lossless")
    assert p.returncode == 0, p.stderr
    vi = json.loads((out / "meta/info.json").read_text())["features"]["observation.images.front"]["info"]
    assert vi["video.codec"] == "h264" and vi["video.pix_fmt"] == "gbrp"  # H.264 lossless, RGB planes
    p = store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "back"))
    assert p.returncode == 0, p.stderr
    assert sorted(json.loads(p.stdout)["cameras"]) == ["observation.images.front", "observation.images.wrist"]
    a, b = _rows(cam_store), _rows(tmp_path / "back")
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


def test_generic_video_dataset_imports_cameras_as_pixels(cam_store: Path, tmp_path: Path, store_cli) -> None:
    """Without the roborl block (another tool's dataset), observation.images.<cam> become pixels.<cam>."""
    out = tmp_path / "lr"
    assert store_cli("export", str(cam_store), "--format", "lerobot", "--out", str(out), "--fps", str(FPS),
                     "--video-codec", "lossless").returncode == 0
    info = json.loads((out / "meta/info.json").read_text())
    info.pop("roborl")
    (out / "meta/info.json").write_text(json.dumps(info))
    p = store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / "g"))
    assert p.returncode == 0, p.stderr
    st = ReplayStore.open(tmp_path / "g", mode="r")
    assert st.observation_space["pixels"]["front"].shape == (48, 64, 3)
    assert st.observation_space["pixels"]["front"].dtype == np.uint8
    got = st.read_rows("demo", 0, st.end_row("demo"))["obs.pixels.wrist"]
    st.close()
    np.testing.assert_array_equal(got, _rows(cam_store)["obs.pixels.wrist"])


def test_camera_mismatches_are_one_line_naming_the_field(cam_store: Path, tmp_path: Path, store_cli,
                                                         one_line_error) -> None:
    out = tmp_path / "lr"
    assert store_cli("export", str(cam_store), "--format", "lerobot", "--out", str(out), "--fps", str(FPS)).returncode == 0

    def variant(name: str, edit) -> Path:
        d = tmp_path / name
        shutil.copytree(out, d)
        info = json.loads((d / "meta/info.json").read_text())
        edit(d, info)
        (d / "meta/info.json").write_text(json.dumps(info))
        return d

    # A missing camera file.
    d = variant("nofile", lambda d, i: (d / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink())
    one_line_error(store_cli("import", str(d), "--format", "lerobot", "--store", str(tmp_path / "s1")),
                   "observation.images.wrist", "missing")
    # A camera stream at another rate than the dataset.
    d = variant("fps", lambda d, i: i["features"]["observation.images.front"]["info"].update({"video.fps": 30}))
    one_line_error(store_cli("import", str(d), "--format", "lerobot", "--store", str(tmp_path / "s2")),
                   "fps", "observation.images.front", "30")
    # A camera the store has but the dataset does not (generic dataset without the wrist camera).
    def drop_wrist(d: Path, i: dict) -> None:
        i.pop("roborl")
        i["features"].pop("observation.images.wrist")
    d = variant("nowrist", drop_wrist)
    shutil.copytree(cam_store, tmp_path / "s3", ignore=shutil.ignore_patterns("LOCK"))
    one_line_error(store_cli("import", str(d), "--format", "lerobot", "--store", str(tmp_path / "s3")),
                   "camera", "obs.pixels.wrist")
    # A camera whose frame size disagrees with the observation space.
    d = variant("shape", lambda d, i: i["features"]["observation.images.front"].update({"shape": [32, 32, 3]}))
    one_line_error(store_cli("import", str(d), "--format", "lerobot", "--store", str(tmp_path / "s4")),
                   "observation.images.front", "[32, 32, 3]")
    # An image feature (frames inside the parquet rows) whose column is missing.
    def as_image(d: Path, i: dict) -> None:
        i.pop("roborl")
        i["features"]["observation.images.front"]["dtype"] = "image"
    d = variant("image", as_image)
    one_line_error(store_cli("import", str(d), "--format", "lerobot", "--store", str(tmp_path / "s5")),
                   "observation.images.front", "no such column")
    for s in ("s1", "s2", "s4", "s5"):
        assert not (tmp_path / s).exists(), s
    # An unknown codec.
    p = store_cli("export", str(cam_store), "--format", "lerobot", "--out", str(tmp_path / "o"), "--fps", str(FPS),
                  "--video-codec", "mjpeg")
    assert p.returncode == 2 and "--video-codec" in p.stderr


def test_rendered_mujoco_cameras_round_trip(tmp_path: Path, store_cli, gl_env: dict[str, str]) -> None:
    """Real frames: scripted Push demos with front and wrist cameras (rendered; skips without a GL backend)
    through `roborl collect`, exported as h264 and lossless, imported back."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    st = tmp_path / "push_pix"
    p = subprocess.run([sys.executable, "-m", "roborl.cli", "collect", "--env", "roborl/Push-v0", "--policy", "scripted",
                        "--store", str(st), "--episodes", "2",
                        "env.kwargs={obs_mode: proprio+pixels, image_size: 32, cameras: [front, wrist]}"],
                       cwd=repo, env=dict(gl_env, ROBORL_QUIET="1"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    a = _rows(st)
    assert a["obs.pixels.front"].shape[1:] == (32, 32, 3) and a["obs.pixels.front"].std() > 5  # a real picture
    for codec in ("h264", "lossless"):
        out = tmp_path / f"lr_{codec}"
        p = store_cli("export", str(st), "--format", "lerobot", "--out", str(out), "--video-codec", codec,
                      env={"MUJOCO_GL": os.environ.get("MUJOCO_GL", "disabled")})
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["fps"] == 10  # Push's control rate
        p = store_cli("import", str(out), "--format", "lerobot", "--store", str(tmp_path / f"back_{codec}"))
        assert p.returncode == 0, p.stderr
        b = _rows(tmp_path / f"back_{codec}")
        for k in a:
            if "pixels" not in k or codec == "lossless":
                assert a[k].tobytes() == b[k].tobytes(), (codec, k)
        if codec == "h264":
            for cam in ("front", "wrist"):
                x, y = a[f"obs.pixels.{cam}"], b[f"obs.pixels.{cam}"]
                assert np.mean([_psnr(x[i], y[i]) for i in range(len(x))]) > 28.0, cam  # measured 31.6-36.9 dB


def test_camera_files_roll_over_at_episode_boundaries(cam_store: Path, tmp_path: Path) -> None:
    """video_file_mb=0: every episode starts a new mp4 (file-000, file-001, ...); import follows the locators."""
    from roborl.interop.lerobot import export_store, import_dataset

    out = tmp_path / "lr"
    export_store(cam_store, out, fps=FPS, video_codec="lossless", video_file_mb=0)
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    k = "videos/observation.images.front/"
    assert [e[k + "file_index"] for e in eps] == [0, 1, 2, 3]
    assert all(e[k + "from_timestamp"] == 0.0 for e in eps)
    assert len(list(out.glob("videos/observation.images.wrist/chunk-000/file-*.mp4"))) == 4
    import_dataset(str(out), tmp_path / "back")
    a, b = _rows(cam_store), _rows(tmp_path / "back")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_image_features_png_in_parquet_import_exactly(tmp_path: Path, store_cli) -> None:
    """LeRobot's use_videos=False layout: dtype 'image', PNG bytes in a {bytes, path} struct column."""
    import imageio.v3 as iio

    root = tmp_path / "img"
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    T = [3, 5]
    frames = np.stack([_frame(24, 32, 0.5 * t, 0) for t in range(8)])
    state = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    png = [iio.imwrite("<bytes>", f, extension=".png") for f in frames]  # bytes of each PNG
    img_col = pa.StructArray.from_arrays([pa.array(png, pa.binary()), pa.array([None] * 8, pa.string())],
                                         names=["bytes", "path"])
    cols = {"observation.images.top": img_col,
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 2),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(-state.reshape(-1)), 2),
            "timestamp": pa.array(np.zeros(8, np.float32)), "frame_index": pa.array(np.r_[0:3, 0:5].astype(np.int64)),
            "episode_index": pa.array(np.repeat([0, 1], T).astype(np.int64)), "index": pa.array(np.arange(8)),
            "task_index": pa.array(np.zeros(8, np.int64))}
    pq.write_table(pa.table(cols), root / "data/chunk-000/file-000.parquet")
    feats = {"observation.images.top": {"dtype": "image", "shape": [24, 32, 3], "names": ["height", "width", "channels"]},
             "observation.state": {"dtype": "float32", "shape": [2], "names": None},
             "action": {"dtype": "float32", "shape": [2], "names": None}}
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 15, "features": feats,
                                                     "data_path": "x", "video_path": None}))
    p = store_cli("import", str(root), "--format", "lerobot", "--store", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    st = ReplayStore.open(tmp_path / "s", mode="r")
    assert st.observation_space["pixels"]["top"].shape == (24, 32, 3)
    rows = st.read_rows("demo", 0, 8)
    st.close()
    np.testing.assert_array_equal(rows["obs.pixels.top"], frames)  # PNG is lossless
    np.testing.assert_array_equal(rows["obs.state"], state)
    np.testing.assert_array_equal(rows["next_obs.pixels.top"][:2], frames[1:3])  # next frame inside an episode
    np.testing.assert_array_equal(rows["next_obs.pixels.top"][2], frames[2])  # episode end: its own frame
