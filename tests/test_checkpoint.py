"""Checkpoints: round trip without pickle, atomic latest pointer, one-line errors on corruption."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from roborl.checkpoint import find_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from roborl.errors import UsageError


def test_round_trip_nested_state(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": net.state_dict(), "opt": opt.state_dict(), "arr": np.arange(5), "t": (1, "a", None),
             "nested": {3: [1.5, {"x": torch.ones(2)}]}}
    save_checkpoint(tmp_path, 7, state, {"algo": "x"})
    got, meta, step = load_checkpoint(tmp_path)
    assert step == 7 and meta == {"algo": "x"}
    torch.testing.assert_close(got["model"]["weight"], net.weight.detach())
    opt2 = torch.optim.Adam(net.parameters())
    opt2.load_state_dict(got["opt"])
    assert got["t"] == (1, "a", None) and got["nested"][3][1]["x"].sum() == 2
    np.testing.assert_array_equal(got["arr"], np.arange(5))


def test_latest_and_pruning(tmp_path: Path) -> None:
    for s in (1, 2, 3, 4):
        save_checkpoint(tmp_path, s, {"x": torch.tensor(s)}, {}, keep=2)
    assert find_checkpoint(tmp_path).name == "step_000000004"
    assert len(list((tmp_path / "checkpoints").glob("step_*"))) == 2
    assert load_checkpoint(tmp_path)[0]["x"].item() == 4


def test_rng_state_round_trip() -> None:
    st = rng_state()
    a = (np.random.rand(), torch.rand(1).item())
    set_rng_state(st)
    assert (np.random.rand(), torch.rand(1).item()) == a


def test_corrupt_checkpoints_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(UsageError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    ck = save_checkpoint(tmp_path, 1, {"x": torch.ones(3)}, {})
    (ck / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="corrupt checkpoint"):
        load_checkpoint(ck)
    ck = save_checkpoint(tmp_path, 2, {"x": torch.ones(3)}, {})
    (ck / "state.json").write_text("{not json")
    with pytest.raises(UsageError, match="corrupt checkpoint"):
        load_checkpoint(ck)
