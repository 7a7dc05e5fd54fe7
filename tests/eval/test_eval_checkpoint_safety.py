"""A checkpoint is data: it never imports code on its own, and non-finite weights are refused."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file


def _copy_latest(ppo_run: Path, tmp_path: Path) -> Path:
    from roborl.checkpoint import find_checkpoint

    dst = tmp_path / "ckpt"
    shutil.copytree(find_checkpoint(ppo_run), dst)
    return dst


def test_checkpoint_env_imports_need_the_user_s_consent(roborl, ppo_run: Path, tmp_path: Path) -> None:
    ck = _copy_latest(ppo_run, tmp_path)
    # A module that leaves a trace when imported: proof of whether it ran.
    (tmp_path / "evil_mod_roborl_test.py").write_text(
        f"open({str(tmp_path / 'IMPORTED')!r}, 'w').write('x')\n")
    doc = json.loads((ck / "state.json").read_text())
    doc["meta"]["config"]["env"]["imports"] = ["evil_mod_roborl_test"]
    (ck / "state.json").write_text(json.dumps(doc))
    import os

    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    import subprocess

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "roborl.cli", "eval", str(ck), "--episodes", "1", "--json", *extra],
                              capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[2])

    p = run()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "evil_mod_roborl_test" in p.stderr and "--env-imports" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "IMPORTED").exists()
    # roborl export builds the env too (for its action box): the same refusal, nothing imported
    p = subprocess.run([sys.executable, "-m", "roborl.cli", "export", str(ck), "--format", "torchscript",
                        "--out", str(tmp_path / "p.pt")], capture_output=True, text=True, timeout=300, env=env,
                       cwd=Path(__file__).parents[2])
    assert p.returncode == 2 and "evil_mod_roborl_test" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "IMPORTED").exists()
    p = run("--env-imports", "evil_mod_roborl_test")  # named explicitly: imported
    assert p.returncode == 0, p.stderr[-1500:]
    assert (tmp_path / "IMPORTED").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(roborl, ppo_run: Path, tmp_path: Path, bad: float) -> None:
    ck = _copy_latest(ppo_run, tmp_path)
    tensors = load_file(str(ck / "tensors.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    t = tensors[name].clone()
    t.view(-1)[0] = bad
    tensors[name] = t
    save_file(tensors, str(ck / "tensors.safetensors"))
    p = roborl("eval", str(ck), "--episodes", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "non-finite" in p.stderr and name in p.stderr
