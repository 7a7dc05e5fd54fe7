"""One success reader for every place that asks "did this step succeed?".

Envs report success in ``info``: gymnasium-robotics and our arm tasks use ``is_success``,
Meta-World and several LeRobot/gym-hil envs use ``success``. ``key`` names an env's own key
(``env.success_key``); without it the known keys are tried in order.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SUCCESS_KEYS: tuple[str, ...] = ("is_success", "success")

__all__ = ["SUCCESS_KEYS", "step_success", "vector_success"]


def _keys(key: str | None) -> tuple[str, ...]:
    return (key,) if key else SUCCESS_KEYS


def step_success(info: dict[str, Any], key: str | None = None) -> bool:
    """True when one env step's ``info`` flags success (any true element of an array value)."""
    for k in _keys(key):
        if k in info:
            try:
                return bool(np.asarray(info[k]).any())
            except (TypeError, ValueError):
                return False
    return False


def vector_success(info: dict[str, Any], n: int, key: str | None = None) -> np.ndarray | None:
    """bool [n] success flags of a gymnasium vector env's ``info`` (respecting its ``_key`` presence
    masks); None when no env reports the key."""
    for k in _keys(key):
        if k in info:
            v = np.asarray(info[k]).reshape(-1)
            if v.shape[0] == n:
                mask = info.get("_" + k)
                return v.astype(bool) & (np.asarray(mask, dtype=bool) if mask is not None else True)
    return None
