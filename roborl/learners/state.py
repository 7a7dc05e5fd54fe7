"""Checkpoint state shared by the off-policy learners with flat observations (TD3, DDPG, discrete SAC).

:class:`LearnerState` gives ``full_state``/``load_full_state`` (the module's weights, each optimiser
named in ``OPTIMIZERS`` and the update counter) and ``acting_state``/``load_acting_state`` (the
observation normaliser and the actor only: what a remote actor needs). :func:`config_from_meta`
rebuilds a learner's config from a checkpoint's metadata.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

import torch

__all__ = ["LearnerState", "config_from_meta"]

C = TypeVar("C")


class LearnerState:
    """Mixin for an ``nn.Module`` learner with attributes ``<name>`` (optimisers) and ``_updates``."""

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("actor_opt", "critic_opt")
    ACTING_PREFIXES: ClassVar[tuple[str, ...]] = ("normalizer", "actor.")

    def full_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {"model": self.state_dict(), "updates": self._updates}  # type: ignore[attr-defined]
        st.update({name: getattr(self, name).state_dict() for name in self.OPTIMIZERS})
        return st

    def load_full_state(self, st: dict[str, Any]) -> None:
        self.load_state_dict(st["model"])  # type: ignore[attr-defined]
        for name in self.OPTIMIZERS:
            getattr(self, name).load_state_dict(st[name])
        self._updates = int(st.get("updates", 0))

    def acting_state(self) -> dict[str, torch.Tensor]:
        """Normaliser and actor (no critics, no targets, no temperature)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.ACTING_PREFIXES)}  # type: ignore[attr-defined]

    def load_acting_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=False)  # type: ignore[attr-defined]


def config_from_meta(cls: type[C], meta: dict[str, Any], section: str) -> C:
    """``cls`` filled from ``meta["config"][section]`` (keys a newer config dropped are ignored)."""
    from roborl.config import build

    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return build(cls, {k: v for k, v in meta["config"][section].items() if k in known}, source="checkpoint meta")
