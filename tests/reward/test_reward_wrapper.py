"""ClassifierReward on real envs: thresholded reward ends episodes, confirm_steps, operator labels,
camera checks, fine-tuning from corrections; and on roborl/Push-v0 pixels when GL works."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roborl.errors import UsageError
from roborl.reward.wrapper import ClassifierReward

from toy_square import SquareEnv

NO, YES = np.array([-1.0], np.float32), np.array([1.0], np.float32)


def test_success_frame_gives_reward_and_ends_the_episode(toy_model: Path) -> None:
    env = ClassifierReward(SquareEnv(horizon=20), toy_model)
    env.reset(seed=0)
    for _ in range(5):
        _, r, term, trunc, info = env.step(NO)
        assert (r, term, trunc) == (0.0, False, False)
        assert info["classifier_prob"] < 0.5 and info["classifier_reward"] == 0.0 and info["operator_label"] == -1
    _, r, term, _, info = env.step(YES)
    assert r == 1.0 and term and info["classifier_reward"] == 1.0 and info["classifier_prob"] > 0.5
    assert info["env_reward"] == 1.0 and info["is_success"] is True


def test_confirm_steps_holds_back_a_single_positive_frame(toy_model: Path) -> None:
    env = ClassifierReward(SquareEnv(horizon=20), toy_model, confirm_steps=2)
    env.reset(seed=1)
    _, r, term, _, info = env.step(YES)
    assert info["classifier_prob"] > 0.5 and (r, term) == (0.0, False)   # one positive frame: not yet
    _, r, term, _, _ = env.step(NO)
    assert (r, term) == (0.0, False)                                       # the streak broke
    env.step(YES)
    _, r, term, _, info = env.step(YES)
    assert (r, term) == (1.0, True) and info["classifier_reward"] == 1.0  # two in a row


def test_no_terminate_keeps_the_episode_going(toy_model: Path) -> None:
    env = ClassifierReward(SquareEnv(horizon=20), toy_model, terminate=False)
    env.reset(seed=2)
    _, r, term, _, _ = env.step(YES)
    assert (r, term) == (1.0, False)


def test_operator_labels_override_the_classifier(toy_model: Path, tmp_path: Path) -> None:
    env = ClassifierReward(SquareEnv(horizon=20), toy_model)
    env.reset(seed=3)
    env.step(NO)
    assert env.label(True) is True
    _, r, term, _, info = env.step(NO)         # the classifier says no; the operator says success
    assert (r, term) == (1.0, True) and info["operator_label"] == 1 and info["classifier_reward"] == 0.0
    assert info["is_success"] is True
    env.reset(seed=4)
    env.label(False)
    _, r, term, _, info = env.step(YES)        # the classifier says yes; the operator says failure
    assert (r, term) == (0.0, True) and info["operator_label"] == 0 and info["classifier_reward"] == 1.0
    # A label after the episode ended changes no step; it is kept as a correction for fine-tuning.
    assert env.label(False) is False
    frames, labels, prop = env.labelled_frames()
    assert frames["cam"].shape[1:] == (24, 24, 3) and prop is None
    assert labels.tolist()[0] is True and not labels[1:].any() and len(labels) >= 2
    meta = env.finetune(steps=3, out=tmp_path / "ft")
    assert meta is not None and meta["finetunes"][-1]["frames"] == len(labels)
    assert env.model_dir == tmp_path / "ft" and env.num_corrections == 0 and env.finetune() is None


def test_camera_and_threshold_checks(toy_model: Path) -> None:
    with pytest.raises(UsageError, match=r"no 'cam' \(it has: front, state\)"):
        ClassifierReward(SquareEnv(cam="front"), toy_model)
    with pytest.raises(UsageError, match="threshold"):
        ClassifierReward(SquareEnv(), toy_model, threshold=1.5)
    with pytest.raises(UsageError, match="confirm_steps"):
        ClassifierReward(SquareEnv(), toy_model, confirm_steps=0)


def test_on_push_pixels(tmp_path: Path) -> None:
    """Wiring on a real MuJoCo task with a camera (frames into a store, a classifier, the wrapper), in a
    fresh interpreter so that MUJOCO_GL=osmesa is set before mujoco picks a GL backend."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"), PYOPENGL_PLATFORM="osmesa")
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("push_pixels_check.py")), str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=600)
    if p.returncode == 3:
        pytest.skip(p.stdout.strip())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK" in p.stdout


def test_info_goes_into_a_store_and_operator_labels_come_back(toy_model: Path, tmp_path: Path) -> None:
    """What env_step must store (STORE_FIELDS from info), read back as training labels."""
    from roborl.reward.config import RewardConfig
    from roborl.reward.data import load_frames
    from roborl.reward.wrapper import STORE_FIELDS, wrap_reward
    from roborl.store import ReplayStore

    base = SquareEnv(horizon=6)
    assert wrap_reward(base, RewardConfig()) is base
    env = wrap_reward(base, RewardConfig(classifier=str(toy_model), confirm_steps=1))
    st = ReplayStore.create(tmp_path / "s", env_id="toy/Square", observation_space=env.observation_space,
                            action_space=env.action_space, extra_fields=STORE_FIELDS)
    for ep, label in enumerate((None, True)):
        obs, _ = env.reset(seed=ep)
        st.start_episode(obs, "online")
        done, t = False, 0
        while not done:
            if label is not None and t == 2:
                env.label(label)           # the operator pressed success on a frame without a square
            obs, r, term, trunc, info = env.step(NO)
            st.add_step(action=NO, reward=r, next_obs=obs, terminated=term, truncated=trunc,
                        is_success=info["is_success"], **{k: info[k] for k in STORE_FIELDS})
            done, t = term or trunc, t + 1
    rows = st.read_rows("online", 0, st.num_steps("online"), list(STORE_FIELDS) + ["reward"])
    st.close()
    assert rows["operator_label"].tolist() == [-1] * 6 + [-1, -1, 1]
    assert rows["reward"].tolist() == [0.0] * 8 + [1.0]
    fs = load_frames([tmp_path / "s"], ["cam"], rule="step")
    assert fs.labels.tolist() == [False] * 8 + [True]
