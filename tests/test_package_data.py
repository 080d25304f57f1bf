"""The files gym_ray reads from its own package at run time ship in its wheel: the program the code verifier
runs in the sandbox, report.html's template, style and script, `gym-ray init env`'s templates. Built from a copy of the sources, so the
working tree gets no build output."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ["gym_ray/sandbox/programs/runner.py",
                 "gym_ray/report/page.html", "gym_ray/report/page.css", "gym_ray/report/page.js",
                 *(f"gym_ray/scaffold/templates/{kind}/server.py.tmpl" for kind in ("tool", "step", "code")),
                 "gym_ray/scaffold/templates/common/pyproject.toml.tmpl"]


def test_wheel_ships_the_package_files(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "gym_ray", src / "gym_ray", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(tmp_path / "dist"), str(src)], check=True, timeout=600)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in PACKAGE_FILES if f not in shipped] == []
