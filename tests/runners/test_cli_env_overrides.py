"""`roborl collect` and `roborl teleop` take the same env.* key=value overrides as `roborl train`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from roborl.store import ReplayStore


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roborl.cli", *args], capture_output=True, text=True, timeout=300)


def _obs_fields(store: Path) -> tuple[list[str], "object"]:
    s = ReplayStore.open(store, mode="r")
    try:
        return sorted(s.obs_keys), s.episodes("demo")
    finally:
        s.close()


def test_collect_applies_env_overrides(tmp_path: Path) -> None:
    out = _cli("collect", "--env", "roborl/Reach-v0", "--policy", "scripted", "--store", str(tmp_path / "c"),
               "--episodes", "1", "env.max_episode_steps=12", "env.kwargs.obs_mode=proprio")
    assert out.returncode == 0, out.stderr
    keys, eps = _obs_fields(tmp_path / "c")
    assert int(eps[0, 1]) <= 12
    assert keys != [""] and any("proprio" in k for k in keys), keys  # a Dict observation, not the flat state


def test_teleop_applies_env_and_teleop_prefixed_overrides(tmp_path: Path) -> None:
    out = _cli("teleop", "--env", "roborl/Reach-v0", "--device", "scripted", "--store", str(tmp_path / "t"),
               "--episodes", "1", "--hz", "200", "--json", "teleop.zero_warn_s=5", "env.max_episode_steps=9",
               "env.kwargs.obs_mode=proprio")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["mean_length"] <= 9
    keys, _ = _obs_fields(tmp_path / "t")
    assert any("proprio" in k for k in keys), keys


def test_bad_override_keys_are_one_line(tmp_path: Path) -> None:
    for args in (["collect", "--env", "roborl/Reach-v0", "--policy", "random", "--store", str(tmp_path / "a"),
                  "--episodes", "1", "sac.lr=1"],
                 ["teleop", "--env", "roborl/Reach-v0", "--device", "scripted", "--store", str(tmp_path / "b"),
                  "--episodes", "1", "env.nosuch=1"]):
        out = _cli(*args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr
