"""PPO (owned by the PPO work, issue 5). Stub: config only."""
from __future__ import annotations

from dataclasses import dataclass

from roborl.config import field, positive


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters."""

    lr: float = field(3e-4, doc="Adam learning rate.", check=positive)
