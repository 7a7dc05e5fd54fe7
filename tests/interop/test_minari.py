"""Minari interop with the real minari package: a dataset made locally with DataCollector is imported and
trained on (BC), a store export loads back with minari.load_dataset. Nothing is downloaded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from roborl.store import ReplayStore

minari = pytest.importorskip("minari")
pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[2]


def _controller(obs: np.ndarray) -> np.ndarray:
    """A deterministic Pendulum controller (a function of the observation, so BC can fit it)."""
    cos, sin, vel = obs
    return np.clip(np.array([-2.0 * sin - 0.5 * vel + 0.5 * cos], dtype=np.float32), -2.0, 2.0)


@pytest.fixture()
def pendulum_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    from minari import DataCollector

    root = tmp_path / "minari_root"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    env = DataCollector(gym.make("Pendulum-v1", max_episode_steps=100), data_format="arrow", record_infos=False)
    for ep in range(4):
        obs, _ = env.reset(seed=ep)
        while True:
            obs, _r, term, trunc, _ = env.step(_controller(obs))
            if term or trunc:
                break
    env.create_dataset(dataset_id="test/pendulum-ctrl-v0", eval_env="Pendulum-v1", algorithm_name="controller", author="roborl tests",
                       author_email="none", code_permalink="none", description="Pendulum, a fixed controller")
    env.close()
    return root, "test/pendulum-ctrl-v0"


def test_import_datacollector_dataset_and_train_bc(pendulum_dataset: tuple[Path, str], tmp_path: Path,
                                                   store_cli) -> None:
    from roborl.learners.sac import SAC, SACConfig
    from roborl.store import Sampler, SamplerConfig

    root, ds_id = pendulum_dataset
    p = store_cli("import", ds_id, "--format", "minari", "--store", str(tmp_path / "s"),
                  env={"MINARI_DATASETS_PATH": str(root)})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["episodes"] == 4
    st = ReplayStore.open(tmp_path / "s", mode="r")
    assert st.env_id == "Pendulum-v1" and st.num_steps("demo") == 400
    ds = minari.load_dataset(ds_id)
    ep0 = next(ds.iterate_episodes())
    rows = st.read_episode("demo", 0)
    np.testing.assert_array_equal(rows["obs"], ep0.observations[:-1])
    np.testing.assert_array_equal(rows["next_obs"], ep0.observations[1:])
    np.testing.assert_array_equal(rows["action"], ep0.actions)
    assert rows["truncated"][-1] and not rows["terminated"].any()

    # A few BC steps through the store's Sampler and the SAC learner's bc_update, unchanged.
    torch.manual_seed(0)
    sampler = Sampler(st, SamplerConfig(), seed=0)
    learner = SAC(3, 1, SACConfig(hidden=(64, 64), lr=3e-3), "cpu")
    learner.normalizer.fit(torch.as_tensor(st.read_rows("demo", 0, 400)["obs"]))
    losses = []
    for _ in range(300):
        b = sampler.sample(64, gamma=0.99, n_step=1, demo_fraction=1.0, relabel=False)
        losses.append(float(learner.bc_update(b.obs, b.action / 2.0)))  # Pendulum's [-2, 2] box -> [-1, 1]
    assert np.mean(losses[-20:]) < 0.25 * np.mean(losses[:20]), (losses[:5], losses[-5:])
    st.close()


def test_export_loads_back_with_minari(tmp_path: Path, store_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "minari_root"
    out = root / "roborl" / "reach-v0"
    p = store_cli("export", str(REPO / "demos/reach"), "--format", "minari", "--out", str(out))
    assert p.returncode == 0, p.stderr
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    ds = minari.load_dataset("roborl/reach-v0")
    src = ReplayStore.open(REPO / "demos/reach", mode="r")
    assert ds.total_episodes == 20 and ds.total_steps == 1000
    assert ds.observation_space == src.observation_space and ds.action_space == src.action_space
    for i, ep in enumerate(ds.iterate_episodes()):
        rows = src.read_episode("demo", i)
        np.testing.assert_array_equal(ep.observations[:-1], rows["obs"])
        np.testing.assert_array_equal(ep.observations[-1], rows["next_obs"][-1])
        np.testing.assert_array_equal(ep.actions, rows["action"])
        np.testing.assert_array_equal(ep.rewards, rows["reward"].astype(np.float64))
        np.testing.assert_array_equal(ep.terminations, rows["terminated"])
        np.testing.assert_array_equal(ep.truncations, rows["truncated"])
        np.testing.assert_array_equal(np.asarray(ep.infos["is_success"]).reshape(-1)[1:], rows["is_success"])
    # ... and back into a store: every field but the wall-clock timestamp and log-probs is bit-exact.
    p = store_cli("import", str(out), "--format", "minari", "--store", str(tmp_path / "back"))
    assert p.returncode == 0, p.stderr
    back = ReplayStore.open(tmp_path / "back", mode="r")
    a, b = src.read_rows("demo", 0, 1000), back.read_rows("demo", 0, 1000)
    for k in a:
        if k not in ("timestamp", "log_prob"):
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    np.testing.assert_array_equal(src.episodes("demo"), back.episodes("demo"))
    src.close()
    back.close()


def test_minari_mismatches_and_missing_package(pendulum_dataset: tuple[Path, str], tmp_path: Path, store_cli,
                                               one_line_error) -> None:
    root, ds_id = pendulum_dataset
    reach = tmp_path / "reach"
    shutil.copytree(REPO / "demos/reach", reach, ignore=shutil.ignore_patterns("LOCK"))
    env = {"MINARI_DATASETS_PATH": str(root)}
    one_line_error(store_cli("import", ds_id, "--format", "minari", "--store", str(reach), env=env), "'obs'", "[3]",
                   "[13]")
    one_line_error(store_cli("import", "test/nothing-v0", "--format", "minari", "--store", str(tmp_path / "x"),
                             env=env), "test/nothing-v0")
    one_line_error(store_cli("import", ds_id, "--format", "minari", "--store", str(tmp_path / "y"), env=env,
                             pre="sys.modules['minari'] = None"), "minari", "roborl[interop]")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_camera_store_round_trips_through_minari_bit_exact(tmp_path: Path, store_cli,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Dict observations with uint8 cameras: Minari keeps them raw in arrow, so the round trip is bit-exact."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_lerobot_video import _make_store, _rows

    src = _make_store(tmp_path / "cams")
    root = tmp_path / "minari_root"
    out = root / "roborl" / "cams-v0"
    p = store_cli("export", str(src), "--format", "minari", "--out", str(out))
    assert p.returncode == 0, p.stderr
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    ds = minari.load_dataset("roborl/cams-v0")
    ep0 = next(ds.iterate_episodes())
    assert ep0.observations["pixels"]["front"].dtype == np.uint8
    assert ep0.observations["pixels"]["front"].shape == (7, 48, 64, 3)  # 6 steps + the final observation
    p = store_cli("import", str(out), "--format", "minari", "--store", str(tmp_path / "back"))
    assert p.returncode == 0, p.stderr
    a, b = _rows(src), _rows(tmp_path / "back")
    for k in a:
        if k not in ("timestamp", "log_prob"):
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
