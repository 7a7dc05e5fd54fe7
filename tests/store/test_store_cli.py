"""`roborl collect` and `roborl store info|verify|merge` through the real CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

from roborl.cli import main
from roborl.store import ReplayStore


def test_collect_resume_info_verify_merge(tmp_path: Path, capsys) -> None:
    s = str(tmp_path / "pend")
    args = ["collect", "--env", "Pendulum-v1", "--policy", "random", "--store", s, "--max-episode-steps", "20"]
    assert main(args + ["--episodes", "2", "--seed", "5"]) == 0
    # Rerunning with a larger target continues (seeds 5+2, 5+3); a smaller target is a no-op.
    assert main(args + ["--episodes", "4", "--seed", "5"]) == 0
    assert main(args + ["--episodes", "3", "--seed", "5"]) == 0
    capsys.readouterr()
    assert main(["store", "info", s, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["demo"] == {"episodes": 4, "steps": 80, "successes": 0} and info["env_id"] == "Pendulum-v1"
    assert main(["store", "verify", s, "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["ok"] and v["demo"] == {"episodes": 4, "steps": 80} and v["online"] == {"episodes": 0, "steps": 0}
    # Same seeds -> same episodes: a fresh store with --episodes 4 holds identical data.
    s2 = str(tmp_path / "pend2")
    assert main(["collect", "--env", "Pendulum-v1", "--policy", "random", "--store", s2, "--max-episode-steps", "20",
                 "--episodes", "4", "--seed", "5", "--partition", "online"]) == 0
    with ReplayStore.open(s, mode="r") as a, ReplayStore.open(s2, mode="r") as b:
        assert (a.read_rows("demo", 0, 80)["obs"] == b.read_rows("online", 0, 80)["obs"]).all()
    assert main(["store", "merge", s, "--into", s2]) == 0
    assert main(["store", "info", s2]) == 0
    out = capsys.readouterr().out
    assert "merged 4 episodes" in out and "demo         4 episodes" in out
    # Usage errors: one line, exit 2.
    assert main(["store", "verify", str(tmp_path / "nope")]) == 1  # not a store: a problem, exit 1
    assert main(["store", "info", str(tmp_path / "nope")]) == 2
    assert main(args + ["--episodes", "0"]) == 2
    err = capsys.readouterr().err
    assert "store not found" in err and "Traceback" not in err
