"""`roborl reward train|eval` through the real CLI in subprocesses: JSON output, exit codes, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from toy_square import write_store

REPO = Path(__file__).resolve().parents[2]


def _roborl(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROBORL_QUIET="1")
    return subprocess.run([sys.executable, "-m", "roborl", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def _one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_train_then_eval_json(toy_stores: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m"
    p = _roborl("reward", "train", "--store", str(toy_stores["train"]), "--out", str(out), "--json",
                "steps=120", "batch_size=32", "pad=2", "positives=step")
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)
    assert meta["cameras"] == ["cam"] and meta["train_config"]["steps"] == 120
    p = _roborl("reward", "eval", str(out), "--store", str(toy_stores["heldout"]), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    for k in ("accuracy", "precision", "recall", "false_positive_rate", "roc_auc"):
        assert isinstance(res[k], float), k
    assert res["roc_auc"] >= 0.95
    p = _roborl("reward", "eval", str(out), "--store", str(toy_stores["heldout"]))
    assert p.returncode == 0 and "false_positive_rate" in p.stdout


def test_bad_input_is_one_line_exit_2(toy_stores: dict[str, Path], toy_model: Path, tmp_path: Path) -> None:
    train = str(toy_stores["train"])
    _one_line_error(_roborl("reward", "train", "--store", train, "--out", str(tmp_path / "a"), "cameras=[wrist]"),
                    "'wrist'", "it has: cam")
    nopos = write_store(tmp_path / "nopos", 2, seed=9, p_success=0.0)
    _one_line_error(_roborl("reward", "train", "--store", str(nopos), "--out", str(tmp_path / "b"), "positives=step"),
                    "no positive")
    _one_line_error(_roborl("reward", "eval", str(tmp_path / "nothing"), "--store", train), "model dir not found")
    _one_line_error(_roborl("reward", "eval", train, "--store", train), "not a reward model dir")
    _one_line_error(_roborl("reward", "train", "--store", str(tmp_path / "nostore"), "--out", str(tmp_path / "c")),
                    "store not found")
    _one_line_error(_roborl("reward", "train", "--store", train, "--out", str(tmp_path / "d"), "stepz=3"),
                    "unknown key 'stepz'")
    enc = tmp_path / "enc.safetensors"
    code = ("import sys; from roborl.reward.model import load_model, save_encoder\n"
            f"m, _ = load_model({str(toy_model)!r}); save_encoder({str(enc)!r}, m.encoders[0])\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0
    _one_line_error(_roborl("reward", "train", "--store", train, "--out", str(tmp_path / "e"), "--encoder", str(enc),
                            "image_size=32"), "expects 3x24x24")
    p = _roborl("--help")
    assert p.returncode == 0 and "reward" in p.stdout


def test_eval_positives_rule_relabels_the_held_out_store(toy_stores: dict[str, Path], toy_model: Path,
                                                         tmp_path: Path) -> None:
    # The toy model trained on per-step labels; 'final' marks only the last 3 steps of episodes ending in success.
    held = str(toy_stores["heldout"])
    step = json.loads(_roborl("reward", "eval", str(toy_model), "--store", held, "--json", "--positives", "step").stdout)
    final = json.loads(_roborl("reward", "eval", str(toy_model), "--store", held, "--json", "--positives", "final").stdout)
    assert step["positives_rule"] == "step" and final["positives_rule"] == "final"
    assert step["positives"] != final["positives"] and step["n"] == final["n"]
    _one_line_error(_roborl("reward", "eval", str(toy_model), "--store", held, "--positives", "all"), "--positives")
