"""Fixtures for the env tests. ``gl`` skips a rendering test, with the reason, where this process
cannot render; it is the shared probe of tests/conftest.py (``gl_in_process``) under a short name."""
from __future__ import annotations

import pytest


@pytest.fixture
def gl(gl_in_process: str) -> str:
    """The GL backend this process renders with (skips the test where none works)."""
    return gl_in_process
