"""Replay store and sampler configuration (owned by the store work)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, positive, unit_interval


@dataclass(frozen=True)
class SamplerConfig:
    """How batches are drawn from the store (all sampling is from RAM)."""

    kind: Literal["uniform", "per", "lap"] = field("uniform", doc="uniform, prioritized (Schaul 2015) or LAP (Fujimoto 2020).")
    demo_fraction: float = field(0.5, doc="Exact share of each batch drawn from the demo partition (RLPD: 0.5).", check=unit_interval)
    n_step: int = field(1, doc="n-step return horizon, computed at sample time.", check=positive)


@dataclass(frozen=True)
class StoreConfig:
    """Where transitions live."""

    path: str | None = field(None, doc="Store directory; null means <run.dir>/store.")
    online_capacity: int = field(1_000_000, doc="Max steps in the online partition (FIFO by whole episodes).", check=positive)
    demos: tuple[str, ...] = field((), doc="Demo stores merged into this store's demo partition at start.")
    sampler: SamplerConfig = field(default_factory=SamplerConfig, doc="Sampler.")
