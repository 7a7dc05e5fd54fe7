"""Explicit table of our gymnasium ids (no registration by import side effect elsewhere).

``import roborl`` calls :func:`register_all`. Each entry point builds the raw task env and
wraps it in :class:`~roborl.envs.safety.SafetyLayer` with the task's workspace box; pass
``safety=False`` to ``gym.make`` for the raw env. ``TimeLimit`` (``truncated=True``) comes
from ``max_episode_steps`` below.
"""
from __future__ import annotations

import gymnasium as gym

# gymnasium id -> "module:callable"
TASKS: dict[str, str] = {
    "roborl/Reach-v0": "roborl.envs.arm.tasks:make_reach",
    "roborl/Push-v0": "roborl.envs.arm.tasks:make_push",
    "roborl/PickPlace-v0": "roborl.envs.arm.tasks:make_pick_place",
    "roborl/PegInsert-v0": "roborl.envs.arm.tasks:make_peg_insert",
}

# Episode lengths in control steps (10 Hz by default: 5-6 s episodes).
MAX_EPISODE_STEPS: dict[str, int] = {
    "roborl/Reach-v0": 50,
    "roborl/Push-v0": 50,
    "roborl/PickPlace-v0": 60,
    "roborl/PegInsert-v0": 60,
}


def register_all() -> None:
    """Register every id in :data:`TASKS` with gymnasium unless it is already registered."""
    for env_id, entry_point in TASKS.items():
        if env_id not in gym.registry:
            # disable_env_checker: gymnasium's PassiveEnvChecker wrapper would re-check, on the first
            # step of every made env, what the test suite checks with the full env checker
            # (tests/envs/test_env_registry_loop.py); it is one more Python layer on every step.
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=MAX_EPISODE_STEPS[env_id],
                         disable_env_checker=True)
