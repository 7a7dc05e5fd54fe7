"""Packaging: pyproject lists every package folder, the distribution's metadata has the base install a
first run needs, and every truly optional feature without its packages fails with one line naming its extra."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(roborl(?:\.[a-z_]+)*)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "roborl").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
    assert "roborl.assets" in listed and (ROOT / "envs" / "__init__.py").exists()


def test_cpu_install_path_pins_a_cpu_torch() -> None:
    script = (ROOT / "tools" / "install.sh").read_text()
    assert "torch==2.13.0" in script and "nvidia-smi" in script
    # The torch line stays unpinned in pyproject, with the comment saying why.
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.2"' in text and "CUDA wheels" in text


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> PathDistribution:
    """The metadata pip would install for this checkout (PEP 517 prepare_metadata_for_build_wheel).

    Built from the working tree rather than read from the installed distribution, which may be an
    editable install of another checkout of the repository."""
    out = tmp_path_factory.mktemp("meta")
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    p = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return PathDistribution(out / p.stdout.strip().splitlines()[-1])


def _requires(dist: PathDistribution) -> tuple[set[str], dict[str, set[str]]]:
    base: set[str] = set()
    extras: dict[str, set[str]] = {}
    for req in dist.requires or []:
        name = re.split(r"[ ;<>=!~\[]", req, 1)[0].lower()
        m = re.search(r'extra == "([^"]+)"', req)
        if m:
            extras.setdefault(m.group(1), set()).add(name)
        else:
            base.add(name)
            if name == "gymnasium":
                assert "[mujoco]" in req, req
    return base, extras


def test_plain_install_serves_teleop_hardware_ppo_and_video_eval(metadata: PathDistribution) -> None:
    base, extras = _requires(metadata)
    assert {"torch", "gymnasium", "mujoco", "zarr", "pyzmq", "imageio", "imageio-ffmpeg", "safetensors"} <= base
    assert extras["export"] == {"onnx", "onnxruntime"}
    assert extras["interop"] == {"minari", "pyarrow"}
    assert {"plot", "teleop", "dev", "bench"} <= set(extras)
    assert metadata.metadata["Name"] == "roborl"
    eps = [ep for ep in metadata.entry_points if ep.name == "roborl"]
    assert eps and eps[0].value == "roborl.cli:main"


_STORE_HARNESS = """
from roborl.cli import _Parser
from roborl.errors import UsageError
from roborl.cli import store_interop as c
kind, argv = sys.argv[1], sys.argv[2:]
try:
    p = _Parser(prog="roborl store " + kind)
    getattr(c, "add_%s_arguments" % kind)(p)
    sys.exit(getattr(c, "run_%s" % kind)(p.parse_args(argv)))
except UsageError as e:
    print("roborl: error: %s" % e, file=sys.stderr)
    sys.exit(2)
"""
_CLI = "from roborl.cli import main\nsys.exit(main(sys.argv[1:]))"


def _optional_cases(tmp: Path) -> list[tuple[str, list[str], str, str, list[str]]]:
    """(feature, hidden modules, extra, program, args)."""
    run = tmp / "run"
    (run).mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "time": 0.1, "eval/return": 1.0}\n')
    demos = str(ROOT / "demos" / "reach")
    return [
        ("export onnx", ["onnx", "onnxruntime"], "export", _CLI,
         ["export", str(run), "--format", "onnx", "--out", str(tmp / "p.onnx")]),
        ("store export lerobot", ["pyarrow"], "interop", _STORE_HARNESS,
         ["export", demos, "--format", "lerobot", "--out", str(tmp / "lr")]),
        ("store export minari", ["minari"], "interop", _STORE_HARNESS,
         ["export", demos, "--format", "minari", "--out", str(tmp / "mn")]),
        ("store import minari", ["minari"], "interop", _STORE_HARNESS,
         ["import", "x/y-v0", "--format", "minari", "--store", str(tmp / "st")]),
        ("plot", ["matplotlib"], "plot", _CLI, ["plot", str(run), "--out", str(tmp / "c.png")]),
        ("teleop gamepad", ["pygame"], "teleop", _CLI,
         ["teleop", "--env", "roborl/Reach-v0", "--device", "gamepad", "--store", str(tmp / "t"), "--episodes", "1"]),
        ("teleop spacemouse", ["hid"], "teleop", _CLI,
         ["teleop", "--env", "roborl/Reach-v0", "--device", "spacemouse", "--store", str(tmp / "t2"), "--episodes", "1"]),
    ]


@pytest.mark.parametrize("case", range(7))
def test_missing_optional_dependency_is_one_line_naming_the_extra(case: int, tmp_path: Path) -> None:
    feature, hidden, extra, program, args = _optional_cases(tmp_path)[case]
    pre = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hidden)
    env = dict(os.environ, ROBORL_QUIET="1", MUJOCO_GL="disabled")
    p = subprocess.run([sys.executable, "-c", pre + program, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (feature, p.returncode, p.stderr[-1500:])
    assert len(lines) == 1, (feature, p.stderr)
    assert f"roborl[{extra}]" in lines[0], (feature, lines[0])
