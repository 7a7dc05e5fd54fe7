"""roborl.reward: a learned success reward for robots (HIL-SERL, Luo et al. 2024).

- :mod:`~roborl.reward.config`: :class:`RewardConfig` (the run's ``reward`` section) and
  :class:`ClassifierTrainConfig` (torch-free);
- :mod:`~roborl.reward.data`: labelled frames from replay stores (numpy only);
- :mod:`~roborl.reward.model`: the DrQ-style classifier, its files, :class:`RewardClassifier`;
- :mod:`~roborl.reward.train`: ``train_classifier``, ``evaluate``, ``finetune``;
- :mod:`~roborl.reward.wrapper`: :class:`ClassifierReward`, the training env wrapper.

Names that need torch are imported lazily, so ``from roborl.reward import RewardConfig`` stays light.
"""
from __future__ import annotations

from typing import Any

from roborl.reward.config import ClassifierTrainConfig, RewardConfig

__all__ = ["RewardConfig", "ClassifierTrainConfig", "ClassifierReward", "RewardClassifier", "train_classifier",
           "evaluate", "finetune"]

_LAZY = {"ClassifierReward": "roborl.reward.wrapper", "RewardClassifier": "roborl.reward.model",
         "train_classifier": "roborl.reward.train", "evaluate": "roborl.reward.train", "finetune": "roborl.reward.train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'roborl.reward' has no attribute {name!r}")
