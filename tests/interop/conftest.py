"""Run the store export/import sub-actions the way `roborl store export|import` will: a real subprocess,
roborl.cli's argparse (UsageError instead of usage text) and its one-line error / exit-code handling."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_HARNESS = """
import sys
{pre}
from roborl.cli import _Parser
from roborl.errors import ConfigError, UsageError
from roborl.cli import store_interop as c
kind, argv = sys.argv[1], sys.argv[2:]
try:
    p = _Parser(prog="roborl store " + kind)
    getattr(c, "add_%s_arguments" % kind)(p)
    sys.exit(getattr(c, "run_%s" % kind)(p.parse_args(argv)))
except (UsageError, ConfigError) as e:
    print("roborl: error: %s" % e, file=sys.stderr)
    sys.exit(2)
"""


def run_store(kind: str, *args: str, pre: str = "", env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``roborl store {export,import} ARGS`` in a subprocess; ``pre``: Python run first (e.g. hide a package)."""
    e = dict(os.environ, ROBORL_QUIET="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", _HARNESS.format(pre=pre), kind, *args], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def store_cli():
    return run_store


@pytest.fixture()
def one_line_error():
    """``one_line_error(proc, *words)``: exit code 2 and exactly one stderr line containing every word."""
    return _one_line_error


def _one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]
