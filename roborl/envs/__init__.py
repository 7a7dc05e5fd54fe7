"""roborl.envs.

``roborl.envs.expert(env, noise=0.0)`` returns the scripted expert of one of our arm tasks
(see :mod:`roborl.envs.expert`; that module only imports numpy, so this stays light).
"""
from roborl.envs.expert import expert

__all__ = ["expert"]
