"""Shared test helpers: which headless GL backend can render MuJoCo here, probed in fresh processes.

Rendering tests must skip (with the reason) when no backend works, whatever an earlier test or
import left in ``os.environ``: importing ``roborl.envs.dmc`` sets ``MUJOCO_GL`` (EGL when OSMesa
is missing), so a test that trusted ``MUJOCO_GL`` would try a backend this machine may not have.

* ``gl_env`` (fixture): an environment dict for a rendering *subprocess*, with ``MUJOCO_GL`` and
  ``PYOPENGL_PLATFORM`` set to a backend that rendered a frame in a probe process; skips otherwise.
* ``gl_in_process`` (fixture): for rendering inside the test process, whose backend is the one
  mujoco loaded at import; skips unless that backend renders in a probe and here. When
  ``MUJOCO_GL`` is unset on a headless machine, :func:`pytest_configure` sets it to a backend that
  renders before any test module imports mujoco.

``ROBORL_TEST_GL_BACKENDS=egl,osmesa`` restricts (and orders) the backends tried, e.g. to check
the skip path on a machine that has EGL: ``ROBORL_TEST_GL_BACKENDS=osmesa``.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

#: Headless backends MuJoCo can use (glfw needs a display and is not tried).
GL_BACKENDS: tuple[str, ...] = ("egl", "osmesa")

_PROBE = ("import mujoco\n"
          "r = mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8)\n"
          "r.render()\n"
          "r.close()\n"
          "print('gl-ok')\n")


def _backend_env(backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["MUJOCO_GL"] = backend
    env["PYOPENGL_PLATFORM"] = backend  # PyOpenGL must agree with MuJoCo
    return env


@functools.lru_cache(maxsize=None)
def probe_gl(backend: str) -> str | None:
    """None when ``backend`` renders a frame in a fresh process, else the reason it does not."""
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE], env=_backend_env(backend), capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        return "probe timed out"
    if p.returncode == 0 and "gl-ok" in p.stdout:
        return None
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit code {p.returncode}")[:160]


def _candidates() -> list[str]:
    only = os.environ.get("ROBORL_TEST_GL_BACKENDS")
    order = [b.strip() for b in only.split(",") if b.strip()] if only else list(GL_BACKENDS)
    cur = os.environ.get("MUJOCO_GL")
    if cur in order:  # the backend asked for first, then the others
        order.remove(cur)
        order.insert(0, cur)
    return order


def gl_backend_or_skip() -> str:
    """A headless GL backend that renders MuJoCo on this machine, or pytest.skip naming why none does."""
    reasons = []
    for b in _candidates():
        why = probe_gl(b)
        if why is None:
            return b
        reasons.append(f"{b}: {why}")
    pytest.skip("no GL backend renders MuJoCo here (" + "; ".join(reasons or ["none tried"]) + ")")


@pytest.fixture()
def gl_env() -> dict[str, str]:
    """Environment for a rendering subprocess (MUJOCO_GL / PYOPENGL_PLATFORM set to a working backend)."""
    return _backend_env(gl_backend_or_skip())


def pytest_configure(config: pytest.Config) -> None:
    """Headless and no MUJOCO_GL yet: pick a backend that renders, before any test module imports mujoco
    (mujoco fixes its GL backend at import). This is what roborl.envs.dmc does on import, but probed."""
    if "MUJOCO_GL" in os.environ or os.environ.get("DISPLAY"):
        return
    for b in _candidates():
        if probe_gl(b) is None:
            os.environ["MUJOCO_GL"] = b
            os.environ.setdefault("PYOPENGL_PLATFORM", b)
            return


def _process_backend() -> str:
    """The GL backend mujoco loaded in this process (MUJOCO_GL when mujoco was imported; '' means glfw)."""
    try:
        from mujoco.rendering.classic import gl_context

        return str(getattr(gl_context, "_MUJOCO_GL", os.environ.get("MUJOCO_GL", ""))) or "glfw"
    except ImportError:
        return os.environ.get("MUJOCO_GL") or "glfw"


@pytest.fixture()
def gl_in_process() -> str:
    """Skip unless this process can render: the backend mujoco loaded here works in a probe and here."""
    cur = _process_backend()
    if cur not in _candidates():
        pytest.skip(f"mujoco loaded the GL backend {cur!r} in this process; in-process rendering needs one of "
                    f"{_candidates()}")
    why = probe_gl(cur)
    if why is not None:
        pytest.skip(f"MUJOCO_GL={cur} cannot render here: {why}")
    import mujoco

    try:
        mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8).close()
    except Exception as e:  # the process already holds another GL platform
        pytest.skip(f"no GL context in this process ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    return cur
