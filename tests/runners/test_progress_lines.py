"""Plain progress lines for logs: `roborl train` with stdout not a TTY prints them; --quiet silences them."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from roborl.runs import ProgressLines

LINE = re.compile(r"^step (\d+)/(\d+) \| ([\d.]+) env-steps/s \| ([\d.]+) updates/s \| return (\S+) \| "
                  r"success (\S+) \| eval success (\S+) \| ETA (\S+)$")


def test_line_format_and_forced_lines() -> None:
    buf = io.StringIO()
    pl = ProgressLines(1000, 3600.0, stream=buf, enabled=True)
    assert pl.update(10, 5) is None  # not due
    text = pl.update(100, 5, ret=-12.5, success=1.0, eval_success=None, force=True)
    m = LINE.match(text or "")
    assert m and m.group(1) == "100" and m.group(5) == "-12.50" and m.group(6) == "1.00" and m.group(7) == "-"
    assert buf.getvalue().strip() == text
    assert ProgressLines(1000, 1.0, stream=buf, enabled=False).update(5, force=True) is None


def _train(tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROBORL_QUIET"}
    return subprocess.run([sys.executable, "-m", "roborl.cli", *flags, "train", "/dev/null", "env.id=Pendulum-v1",
                           "sac.hidden=[32,32]", "sac.batch_size=32", "sac.warmup_steps=100", "train.total_steps=400",
                           "train.eval_every=200", "train.eval_episodes=1", "train.log_every_s=0.2",
                           f"run.dir={tmp}"], capture_output=True, text=True, timeout=300, env=env)


def test_train_prints_progress_lines_when_stdout_is_not_a_tty(tmp_path: Path) -> None:
    out = _train(tmp_path / "a")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [m for m in map(LINE.match, out.stdout.splitlines()) if m]
    assert len(lines) >= 3, out.stdout  # at least the two evals and the end
    evals = [m for m in lines if m.group(7) != "-"]
    assert evals and int(evals[0].group(1)) == 200
    assert int(lines[-1].group(1)) == 400 and lines[-1].group(2) == "400"
    assert json.loads(out.stdout.strip().splitlines()[-1])["env_steps"] == 400


def test_quiet_silences_progress_lines(tmp_path: Path) -> None:
    out = _train(tmp_path / "b", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    assert not any(LINE.match(x) for x in out.stdout.splitlines()), out.stdout
