"""Runners own the loop: env stepping, storing, learner updates, eval, checkpoints, logging.

:data:`RUNNERS` maps ``train.algo`` to ``"module:function"``; each function has the
signature ``run(cfg: RunConfig, run_dir: pathlib.Path, role: str, learner_addr: str | None) -> int``.
"""
from __future__ import annotations

RUNNERS: dict[str, str] = {
    "sac": "roborl.runners.sac:run",
    "ppo": "roborl.runners.on_policy:run",
}
