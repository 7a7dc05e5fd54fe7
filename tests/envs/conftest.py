"""Fixtures for the env tests: ``gl`` skips a test (with the reason) where no OpenGL backend renders.

Probed once per session in a subprocess, so a backend that crashes or hangs cannot take pytest
down. ``import roborl.envs`` picks the headless default (OSMesa, else EGL) before mujoco loads,
both here and in the subprocess, which inherits this environment.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import roborl.envs  # noqa: F401  - selects the headless GL backend before anything imports mujoco

_PROBE = ("import roborl.envs, mujoco\n"
          "r = mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8)\n"
          "r.render(); r.close(); print('ok')\n")


def _probe() -> str | None:
    """None when rendering works, else why not (one line)."""
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return "the OpenGL probe timed out"
    if p.returncode == 0 and p.stdout.strip().endswith("ok"):
        return None
    last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"no OpenGL backend for rendering (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}): {last}"


@pytest.fixture(scope="session")
def gl_reason() -> str | None:
    return _probe()


@pytest.fixture
def gl(gl_reason: str | None) -> None:
    """Skip the test where no OpenGL backend can render (install libosmesa6 or use EGL)."""
    if gl_reason is not None:
        pytest.skip(gl_reason)
