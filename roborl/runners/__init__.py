"""Runners own the loop: env stepping, storing, learner updates, eval, checkpoints, logging.

One runner per learner kind (:data:`RUNNER_BY_KIND`); :data:`RUNNERS` maps each ``train.algo``
of :data:`roborl.learners.LEARNERS` to its kind's runner as ``"module:function"``, with the
signature ``run(cfg: RunConfig, run_dir: pathlib.Path, role: str, learner_addr: str | None) -> int``.
"""
from __future__ import annotations

from roborl.learners import LEARNERS

RUNNER_BY_KIND: dict[str, str] = {
    "off_policy": "roborl.runners.off_policy:run",
    "on_policy": "roborl.runners.on_policy:run",
}

RUNNERS: dict[str, str] = {algo: RUNNER_BY_KIND[spec.kind] for algo, spec in LEARNERS.items()}

__all__ = ["RUNNERS", "RUNNER_BY_KIND"]
