"""`roborl eval` through the real CLI in a subprocess: reproduction, JSON, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from roborl.runs import read_metrics

KEYS = {"episodes", "success_rate", "success_ci95", "return_mean", "return_std", "length_mean",
        "time_to_success_mean", "safety_clips_mean"}


def _one_line_error(p, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-1500:])
    err = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("roborl: error:")]
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr[-1500:]
    for n in needles:
        assert n in err[0], err[0]


def test_eval_reproduces_training_time_eval(roborl, ppo_run: Path, capsys):
    rows = [r for r in read_metrics(ppo_run) if r.get("eval/return") is not None]
    assert [r["step"] for r in rows] == [512, 1024]
    # The run dir -> latest checkpoint (step 1024) -> same numbers as the final training-time eval.
    p = roborl("eval", str(ppo_run), "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert set(out) == KEYS
    assert out["episodes"] == 3
    assert out["return_mean"] == rows[-1]["eval/return"]
    assert out["success_rate"] == rows[-1]["eval/success"]
    lo, hi = out["success_ci95"]
    assert 0.0 <= lo <= out["success_rate"] <= hi <= 1.0
    # An older checkpoint reproduces the older eval round.
    from roborl.cli import main

    assert main(["eval", str(ppo_run / "checkpoints" / "step_000000512"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["return_mean"] == rows[0]["eval/return"]


def test_eval_table_and_options(ppo_run: Path, capsys):
    from roborl.cli import main

    assert main(["eval", str(ppo_run), "--episodes", "2", "--seed", "5", "--stochastic", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "success rate" in out and "seeds 5..6" in out and "stochastic" in out


def _main_error(capsys, argv: list[str], *needles: str) -> None:
    """The real CLI entry point in-process (cheaper than a subprocess for the many small error cases)."""
    from roborl.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("roborl: error:"), err
    for n in needles:
        assert n in err[0], err[0]


def test_corrupt_checkpoints(roborl, ppo_run: Path, tmp_path: Path, capsys):
    # Truncated tensors file (subprocess: the real CLI end to end).
    bad = tmp_path / "trunc"
    shutil.copytree(ppo_run / "checkpoints" / "step_000001024", bad)
    t = bad / "tensors.safetensors"
    t.write_bytes(t.read_bytes()[:100])
    _one_line_error(roborl("eval", str(bad)), "corrupt checkpoint", str(bad))
    # Garbage state.json.
    bad2 = tmp_path / "garbage"
    shutil.copytree(ppo_run / "checkpoints" / "step_000001024", bad2)
    (bad2 / "state.json").write_text("{not json")
    _one_line_error(roborl("eval", str(bad2)), "corrupt checkpoint", str(bad2))
    # Valid JSON whose state lacks the policy's tensors / whose meta lacks the config.
    bad3 = tmp_path / "nostate"
    shutil.copytree(ppo_run / "checkpoints" / "step_000001024", bad3)
    doc = json.loads((bad3 / "state.json").read_text())
    (bad3 / "state.json").write_text(json.dumps(dict(doc, state={})))
    _main_error(capsys, ["eval", str(bad3)], str(bad3))
    (bad3 / "state.json").write_text(json.dumps(dict(doc, meta={"algo": "ppo"})))
    _main_error(capsys, ["eval", str(bad3)], "corrupt checkpoint", "config")
    _main_error(capsys, ["eval", str(tmp_path / "nope")], "not found")
    _main_error(capsys, ["eval", str(tmp_path)], "no checkpoint")


def test_mismatched_env_spaces(roborl, ppo_run: Path, capsys):
    # Pendulum obs (3,) act (1,) vs InvertedPendulum obs (4,) act (1,).
    _one_line_error(roborl("eval", str(ppo_run), "--env", "InvertedPendulum-v5", "--episodes", "1"),
                    "InvertedPendulum-v5", "observation space")
    _main_error(capsys, ["eval", str(ppo_run), "--env", "NoSuchEnv-v9"], "NoSuchEnv-v9")
    _main_error(capsys, ["eval", str(ppo_run), "--episodes", "0"], "--episodes")


def test_perturb_needs_mujoco_env_and_valid_grid(ppo_run: Path, tmp_path: Path, capsys):
    # Pendulum-v1 is not MuJoCo-backed: the grid cannot be applied -> one line, exit 2.
    _main_error(capsys, ["eval", str(ppo_run), "--episodes", "1", "--perturb", "--json"], "--perturb")
    g = tmp_path / "g.yaml"
    g.write_text("axes: {mass: [1.0]}\n")
    _main_error(capsys, ["eval", str(ppo_run), "--perturb", str(g)], "mass")
    _main_error(capsys, ["eval", str(ppo_run), "--perturb", str(tmp_path / "missing.yaml")], "missing.yaml")


@pytest.mark.slow
def test_eval_reproduces_sac_training_time_eval(roborl, tmp_path: Path):
    """The same check for a SAC run (slow: ~300 gradient updates on a shared 2-core CPU)."""
    cfg = tmp_path / "sac.yaml"
    cfg.write_text("run: {name: sac-pendulum, seed: 1}\nenv: {id: Pendulum-v1}\n")
    run_dir = tmp_path / "sac"
    p = roborl("train", str(cfg), f"run.dir={run_dir}", "train.algo=sac", "train.total_steps=400",
               "train.eval_every=200", "train.eval_episodes=2", "train.checkpoint_every=200", "train.log_every=100",
               "sac.warmup_steps=100", "sac.batch_size=32", "sac.hidden=[32,32]", "device=cpu", timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    last = [r for r in read_metrics(run_dir) if r.get("eval/return") is not None][-1]
    p = roborl("eval", str(run_dir), "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["return_mean"] == last["eval/return"] and out["success_rate"] == last["eval/success"]
