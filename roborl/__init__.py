"""roborl: reinforcement learning on real robots and in MuJoCo.

``import roborl`` registers our tasks (``roborl/<Task>-v0``) with gymnasium from the
explicit table in :mod:`roborl.envs.registry`.
"""
from __future__ import annotations

__version__ = "0.1.0"


def make_env(id: str, **kwargs):  # noqa: A002 - mirrors gymnasium.make
    """Make any env roborl knows: a gymnasium id, ``dmc:<domain>-<task>``, or ``robot://HOST:PORT``."""
    from roborl.envs.make import make_env as _make

    return _make(id, **kwargs)


def _register() -> None:
    try:
        from roborl.envs.registry import register_all
    except ModuleNotFoundError:  # during bootstrap, before the env modules exist
        return
    register_all()


_register()
