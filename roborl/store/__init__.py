"""roborl.store: the persistent, crash-safe zarr replay store and its RAM samplers.

``ReplayStore`` (store.py) owns the data on disk; ``Sampler`` (sampler.py) draws batches
from a RAM mirror of it. ``Sampler`` and ``Batch`` are imported lazily so that tools that
only read or write stores (collect, info, crash-test writers) do not pay for importing torch.
"""
from __future__ import annotations

from typing import Any

from roborl.store.config import SamplerConfig, StoreConfig
from roborl.store.schema import StoreCorruptError, StoreError
from roborl.store.store import PARTITIONS, ReplayStore

__all__ = ["ReplayStore", "Sampler", "Batch", "StoreError", "StoreCorruptError", "StoreConfig", "SamplerConfig",
           "PARTITIONS"]


def __getattr__(name: str) -> Any:
    if name in ("Sampler", "Batch"):
        from roborl.store import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'roborl.store' has no attribute {name!r}")
