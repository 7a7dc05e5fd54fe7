"""Videos, learning-curve plots and reports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from roborl.runs import MetricsLogger, write_config


def _frames(path: Path) -> int:
    import imageio.v2 as imageio

    r = imageio.get_reader(str(path))
    try:
        return sum(1 for _ in r)  # decode every frame: count_frames() may estimate from the duration
    finally:
        r.close()


def test_video_cli_frame_count(roborl, ppo_run: Path, tmp_path: Path):
    out = tmp_path / "pend.mp4"
    p = roborl("eval", str(ppo_run), "--episodes", "1", "--video", str(out), "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["length_mean"] == 200.0
    assert _frames(out) == 201  # the reset frame + one per step


def test_video_mujoco_short_episodes(tmp_path: Path, gl_env: dict[str, str]):
    import subprocess
    import sys

    # A fresh interpreter with a GL backend that rendered in a probe (tests/conftest.py), set before mujoco picks one.
    code = f"""
import numpy as np, json
from roborl import config as C
from roborl.envs.config import EnvConfig
from roborl.eval.episodes import run_episodes
class P:
    def act(self, o, deterministic=True): return np.tanh(o[:, :1] * 3.0)
cfg = C.build(EnvConfig, {{"id": "InvertedPendulum-v5", "max_episode_steps": 7,
                          "kwargs": {{"width": 64, "height": 48}}}})
r = run_episodes(P(), cfg, 2, seed=0, video_path={str(tmp_path / 'ip.mp4')!r})
print(json.dumps(r.lengths))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=gl_env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    lengths = json.loads(p.stdout.strip().splitlines()[-1])
    assert _frames(tmp_path / "ip.mp4") == sum(lengths) + len(lengths)


def test_plot_from_real_run(roborl, ppo_run: Path, tmp_path: Path):
    out = tmp_path / "curves.png"
    p = roborl("plot", str(ppo_run), "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not a blank canvas
    p = roborl("plot", str(tmp_path / "nope"), "--out", str(out))
    assert p.returncode == 2 and "nope" in p.stderr


def test_runs_sharing_a_config_are_grouped_with_ci(tmp_path: Path):
    from roborl import config as C
    from roborl.eval.plots import group_runs, load_run, mean_ci, plot_runs, t95
    from roborl.runners.config import RunConfig

    dirs = []
    for lr in (3e-4, 1e-4):
        for seed in range(3):
            d = tmp_path / f"lr{lr}-s{seed}"
            write_config(d, C.build(RunConfig, {"run": {"seed": seed, "dir": str(d)}, "sac": {"lr": lr}}))
            log = MetricsLogger(d, tensorboard=False)
            for k in range(5):
                log.log(100 * k, {"eval/return": float(k + seed), "eval/success": 0.1 * k})
            log.close()
            dirs.append(d)
    groups = group_runs([load_run(d) for d in dirs])
    assert len(groups) == 2 and all(len(m) == 3 for _, m in groups)
    assert any("sac.lr" in label for label, _ in groups)
    _, members = groups[0]
    xs = [m.curves["return"][0] for m in members]
    ys = [m.curves["return"][2] for m in members]
    grid, mean, half = mean_ci(xs, ys, points=5)
    np.testing.assert_allclose(mean, np.arange(5) + 1.0)  # seeds 0,1,2 -> mean offset 1
    np.testing.assert_allclose(half, t95(2) * 1.0 / np.sqrt(3))  # sample std of (0,1,2) is 1
    assert plot_runs(dirs, tmp_path / "g.png").exists()


def test_report_from_real_run(roborl, ppo_run: Path, tmp_path: Path):
    out = tmp_path / "rep" / "report.md"
    p = roborl("report", str(ppo_run), "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    md = out.read_text()
    for section in ("## Evaluation of the latest checkpoint", "## Eval rounds during training", "## Learning curves",
                    "## Safety clips and interventions", "## Config", "success rate", "Pendulum-v1"):
        assert section in md, section
    assert (out.parent / "report_curves.png").exists() and "](report_curves.png)" in md
    # The fresh eval reproduces the logged final round.
    from roborl.runs import read_metrics

    last = [r for r in read_metrics(ppo_run) if r.get("eval/return") is not None][-1]
    assert f"{last['eval/return']:.3f} ±" in md


def test_training_diagnostics_figure(tmp_path: Path) -> None:
    """plot_training draws each logged diagnostic (SAC and PPO keys) and refuses a run without any."""
    pytest.importorskip("matplotlib")
    from roborl.eval.plots import plot_training, training_series
    from roborl.runs import MetricsLogger

    run = tmp_path / "run"
    log = MetricsLogger(run, tensorboard=False)
    for step in range(0, 2000, 100):
        log.log(step, {"train/return": -50 + step / 40, "train/success": float(step > 1000),
                       "train/safety_clips": 3, "train/intervention_rate": 0.1}, prefix="")
        log.log(step, {"alpha": 0.1 / (1 + step), "q_mean": -1.0, "td_abs": 0.5, "critic_loss": 0.1,
                       "actor_loss": 1.0, "entropy": 2.0, "env_steps_per_s": 100.0}, prefix="")
    log.close()
    x, y = training_series([{"step": 2, "a": 1.0}, {"step": 1, "a": float("nan")}, {"step": 0, "a": 3}], "a")
    assert x.tolist() == [0.0, 2.0] and y.tolist() == [3.0, 1.0]
    out = plot_training([run], tmp_path / "diag.png")
    assert out.exists() and out.stat().st_size > 10_000
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    from roborl.errors import UsageError

    with pytest.raises(UsageError, match="no training metrics"):
        plot_training([empty], tmp_path / "none.png")
