"""Fixtures of the reward tests: real toy stores on disk and one classifier trained on them."""
from __future__ import annotations

from pathlib import Path

import pytest

from toy_square import write_store


@pytest.fixture(scope="session")
def toy_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reward_stores")
    return {"train": write_store(root / "train", 16, seed=1), "heldout": write_store(root / "heldout", 6, seed=2)}


@pytest.fixture(scope="session")
def toy_model(toy_stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from roborl.reward.config import ClassifierTrainConfig
    from roborl.reward.train import train_classifier

    out = tmp_path_factory.mktemp("reward_model") / "model"
    train_classifier([toy_stores["train"]], out, ClassifierTrainConfig(steps=150, batch_size=32, seed=0, pad=2, positives="step"))
    return out
