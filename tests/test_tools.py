"""The tools that need hardware this machine may lack fail cleanly: one line, exit 2."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run for minutes")
def test_gpu_check_without_cuda_is_one_line() -> None:
    p = subprocess.run(["bash", str(REPO / "tools/gpu_check.sh")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), p.stderr
