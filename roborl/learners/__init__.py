"""Learners: losses and updates only. They never touch zarr, robots or files.

:data:`POLICY_LOADERS` maps ``train.algo`` to ``"module:function"`` with signature
``policy_from_checkpoint(state: dict, meta: dict, device: str) -> Policy``: eval rebuilds
a policy from a checkpoint alone with these (no training code or config file needed).
"""
from __future__ import annotations

import importlib
from typing import Any

from roborl.learners.base import Policy

POLICY_LOADERS: dict[str, str] = {
    "sac": "roborl.learners.sac:policy_from_checkpoint",
    "ppo": "roborl.learners.ppo:policy_from_checkpoint",
}

__all__ = ["POLICY_LOADERS", "Policy", "load_policy"]


def load_policy(state: dict[str, Any], meta: dict[str, Any], device: str = "cpu") -> Policy:
    algo = meta.get("algo") or meta.get("config", {}).get("train", {}).get("algo")
    if algo not in POLICY_LOADERS:
        from roborl.errors import UsageError

        raise UsageError(f"checkpoint meta 'algo' is {algo!r}; expected one of {sorted(POLICY_LOADERS)}")
    mod, fn = POLICY_LOADERS[algo].split(":")
    return getattr(importlib.import_module(mod), fn)(state, meta, device)
