"""Safety layer (owned by the arm-envs work; see issue 2 §4). Stub: config only."""
from __future__ import annotations

from dataclasses import dataclass

from roborl.config import field


@dataclass(frozen=True)
class SafetyConfig:
    """Action safety layer applied before every env step."""

    enabled: bool = field(True, doc="Apply the safety layer (clip, workspace box, motion limits, NaN hold).")
