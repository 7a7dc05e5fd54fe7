"""reward.classifier in a training run: a classifier whose cameras the env lacks is one line, exit 2,
before anything is written; the wrapper's fields become store fields."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward"))
from toy_square import write_store  # noqa: E402  (the reward tests' toy camera task)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from roborl.reward.config import ClassifierTrainConfig
    from roborl.reward.train import train_classifier

    root = tmp_path_factory.mktemp("reward")
    store = write_store(root / "train", 8, seed=1)
    out = root / "model"
    train_classifier([store], out, ClassifierTrainConfig(steps=20, batch_size=16, seed=0, pad=2, positives="step"))
    return out


def test_classifier_cameras_missing_from_the_env_is_one_line_before_any_write(tmp_path: Path, toy_model: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "roborl.cli", "train", "/dev/null", "env.id=Pendulum-v1",
                          f"reward.classifier={toy_model}", "train.total_steps=2000", f"run.dir={tmp_path / 'r'}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "reward.classifier" in out.stderr and "'cam'" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_env_step_stores_the_classifier_fields(tmp_path: Path, toy_model: Path) -> None:
    import numpy as np

    from roborl.envs.step import env_step
    from roborl.reward.wrapper import STORE_FIELDS, ClassifierReward
    from roborl.store import ReplayStore
    from toy_square import SquareEnv

    env = ClassifierReward(SquareEnv(horizon=4), toy_model)
    store = ReplayStore.create(tmp_path / "s", env_id="toy", observation_space=env.observation_space,
                               action_space=env.action_space, extra_fields=dict(STORE_FIELDS))
    obs, _ = env.reset(seed=0)
    store.start_episode(obs)
    probs = []
    for _ in range(4):
        s = env_step(env, obs, np.array([-1.0], np.float32), sink=store, info_fields=tuple(STORE_FIELDS))
        probs.append(s.info["classifier_prob"])
        obs = s.next_obs
        if s.done:
            break
    store.close()
    s2 = ReplayStore.open(tmp_path / "s", mode="r")
    ep = s2.read_episode("online", 0)
    s2.close()
    np.testing.assert_allclose(ep["classifier_prob"], np.asarray(probs, np.float32), rtol=1e-6)
    assert (ep["operator_label"] == -1).all()
