"""Domain randomization (owned by the env-glue work; see issue 2 §4). Stub: config only."""
from __future__ import annotations

from dataclasses import dataclass

from roborl.config import field


@dataclass(frozen=True)
class DRConfig:
    """Per-episode domain randomization of MuJoCo physics."""

    enabled: bool = field(False, doc="Randomize physics each episode.")
