"""roborl.runs: device and precision resolution."""
from __future__ import annotations

import pytest

from roborl.runs import bf16_is_fast, resolve_precision


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_auto_precision_is_fp32_on_cuda(device: str) -> None:
    # Launch-bound GPU updates at our sizes: bf16 autocast measured slower on an H200 (BENCHMARKS.md: GPU).
    assert resolve_precision("auto", device) == "fp32"


def test_auto_precision_on_cpu_follows_the_native_bf16_flags() -> None:
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_is_fast("cpu") else "fp32")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precision_is_kept(device: str, precision: str) -> None:
    assert resolve_precision(precision, device) == precision
