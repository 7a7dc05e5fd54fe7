"""Environment section of a run config (owned by the env-glue work)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roborl.config import field
from roborl.envs.dr import DRConfig
from roborl.envs.safety import SafetyConfig


@dataclass(frozen=True)
class EnvConfig:
    """Which env to make and how to wrap it."""

    id: str = field("roborl/Push-v0", doc="Env id: a gymnasium id, 'dmc:<domain>-<task>', or 'robot://HOST:PORT'.")
    kwargs: dict[str, Any] = field(default_factory=dict, doc="Keyword arguments passed to the env constructor.")
    imports: tuple[str, ...] = field((), doc="Modules imported before making the env, so third-party ids resolve.")
    safety: SafetyConfig = field(default_factory=SafetyConfig, doc="Safety layer.")
    dr: DRConfig = field(default_factory=DRConfig, doc="Domain randomization.")
