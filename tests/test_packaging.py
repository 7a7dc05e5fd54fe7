"""pyproject lists every package folder (package-dir maps roborl.assets to envs/)."""
from __future__ import annotations

import re
from pathlib import Path

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
