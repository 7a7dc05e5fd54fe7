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


def test_demos_without_the_classifier_fields_merge_into_a_classifier_run(tmp_path: Path, toy_model: Path) -> None:
    import gymnasium as gym
    import numpy as np

    from roborl import config as C
    from roborl.runners.config import RunConfig
    from roborl.runners.off_policy import OffPolicyRunner
    from roborl.store import ReplayStore
    from toy_square import SquareEnv

    demos = write_store(tmp_path / "demos", 3, seed=4)  # recorded by teleop: no classifier fields
    gym.register("toy/SquareCamDemos-v0", entry_point=SquareEnv, kwargs={"horizon": 10})
    cfg = C.build(RunConfig, {"env": {"id": "toy/SquareCamDemos-v0", "max_episode_steps": 10},
                              "sac": {"hidden": [16], "batch_size": 8, "warmup_steps": 5, "bc_pretrain_steps": 2,
                                      "encoder": {"channels": 4, "layers": 2, "feature_dim": 8}},
                              "train": {"total_steps": 12, "eval_every": 0, "eval_episodes": 1, "threads": 1},
                              "store": {"demos": [str(demos)], "allow_env_mismatch": True},
                              "reward": {"classifier": str(toy_model)}, "run": {"dir": str(tmp_path / "r")}})
    runner = OffPolicyRunner(cfg, tmp_path / "r")
    try:
        runner.train(quiet=True)
    finally:
        runner.close()
    s = ReplayStore.open(tmp_path / "r" / "store", mode="r")
    d = s.read_rows("demo", int(s.episodes("demo")[0, 0]), int(s.end_row("demo")), ["operator_label", "classifier_prob",
                                                                                      "classifier_reward", "reward"])
    src = ReplayStore.open(demos, mode="r")
    want = src.read_rows("demo", 0, int(src.end_row("demo")), ["reward"])["reward"]
    src.close()
    online = s.read_rows("online", int(s.episodes("online")[0, 0]), int(s.end_row("online")), ["classifier_prob"])
    s.close()
    assert (d["operator_label"] == -1).all() and np.isnan(d["classifier_prob"]).all() and (d["classifier_reward"] == 0).all()
    np.testing.assert_array_equal(d["reward"], want)  # the demo rows themselves are copied unchanged
    assert np.isfinite(online["classifier_prob"]).all()  # online steps carry the classifier's probability
