"""roborl.envs.

``roborl.envs.expert(env, noise=0.0)`` returns the scripted expert of one of our arm tasks
(see :mod:`roborl.envs.expert`; that module only imports numpy, so this stays light).

Headless rendering: MuJoCo picks its GL backend when ``mujoco`` is first imported and defaults
to GLFW, which needs an X display. Without a display and without an explicit ``MUJOCO_GL``,
this package selects OSMesa when its library is installed (software, works everywhere), else
EGL (a GPU or Mesa's EGL). It runs before any env module imports mujoco; an explicit
``MUJOCO_GL`` always wins. PyOpenGL must agree with MuJoCo, or the first render fails
("PYOPENGL_PLATFORM ... should be either unset or 'egl'").
"""
import os as _os
import sys as _sys

#: True when this package chose MUJOCO_GL after mujoco had already been imported (too late to apply).
GL_DEFAULT_TOO_LATE = False
if not _os.environ.get("DISPLAY") and "MUJOCO_GL" not in _os.environ:
    import ctypes.util as _ctypes_util

    GL_DEFAULT_TOO_LATE = "mujoco" in _sys.modules

    _os.environ["MUJOCO_GL"] = "osmesa" if _ctypes_util.find_library("OSMesa") else "egl"
    _os.environ.setdefault("PYOPENGL_PLATFORM", _os.environ["MUJOCO_GL"])

from roborl.envs.expert import expert  # noqa: E402

__all__ = ["expert"]
