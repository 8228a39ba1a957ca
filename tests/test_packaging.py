"""A non-editable install (`pip install .`, a wheel) holds every file the code loads: each module
of engine/, tui/ and notebook/ (pyproject.toml lists the packages by hand, so a new folder is
easy to forget, and an editable install, which the tests run from, never notices), the panel's
stylesheets, and the start-up hook `ctui run` puts on a program's path."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_AS = {"engine": "ctui/engine", "tui": "ctui/tui", "notebook": "ctui/notebook"}
LOADED = (".py", ".tcss")  # modules, and what the code reads by path next to them


def shipped_sources() -> set[str]:
    """Where each source file lands in the wheel."""
    return {f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}"
            for folder, prefix in INSTALLED_AS.items()
            for path in (ROOT / folder).rglob("*")
            if path.suffix in LOADED and "__pycache__" not in path.parts}


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="building the wheel here needs setuptools in this environment")
def test_the_wheel_holds_every_module_stylesheet_and_the_start_up_hook(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in INSTALLED_AS:
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    # setuptools' word for a folder of modules left out of the packages list (-v shows it)
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("ctui-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ctui/engine/observe/boot/sitecustomize.py" in names
    assert "ctui/tui/ctui.tcss" in names
    assert shipped_sources() - names == set()
