"""gym_ray's wheel and two environment packages' wheels, installed into a fresh venv with no editable install
and no checkout on its path, run from a directory outside the checkout: what a user of the wheels gets.

The venv is made from the base interpreter; a `.pth` line hands it the project venv's site-packages for the
third-party dependencies (torch, Ray, ...). Python adds that directory to the path but runs none of its `.pth`
files, so the editable installs' import hooks, which point into the checkout, stay off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

from ports import free_port

from gym_ray.rundir import read_rollout_table

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ["weather", "code"]  # tool calling with its data file; the sandbox's runner program
SOLUTION = textwrap.dedent('''\
    ```python
    def add(a, b):
        return a + b

    def is_palindrome(s):
        return s.lower() == s.lower()[::-1]
    ```''')
BUILD_JUNK = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")


def _build_wheels(src: Path, dist: Path) -> list[Path]:
    """Wheels built from copies of the sources, so the working tree gets no build output."""
    shutil.copytree(ROOT / "gym_ray", src / "gym_ray" / "gym_ray", ignore=BUILD_JUNK)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / "gym_ray")
    for env in ENVIRONMENTS:
        shutil.copytree(ROOT / "environments" / env, src / env, ignore=BUILD_JUNK)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(dist), str(src / "gym_ray"),
                    *(str(src / env) for env in ENVIRONMENTS)], check=True, timeout=600)
    return sorted(dist.glob("*.whl"))


def _venv_without_checkout(venv: Path) -> Path:
    """A venv whose only gym_ray is what gets installed into it; returns its interpreter."""
    base = Path(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheels_install_and_run_without_the_checkout(tmp_path):
    """Build, install, then one scripted run of both packaged configs: rows ok, the code env's solution
    passes its tests in the sandbox (the runner program ships in gym_ray's wheel), the report is written
    (its template, style and script ship there too)."""
    wheels = _build_wheels(tmp_path / "src", tmp_path / "dist")
    assert [w.name.split("-")[0] for w in wheels] == ["gym_ray", "gym_ray_env_code", "gym_ray_env_weather"]
    python = _venv_without_checkout(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *map(str, wheels)],
                   check=True, timeout=300, env=env)

    work = tmp_path / "work"
    work.mkdir()
    packages = ["gym_ray", *(f"gym_ray_env_{name}" for name in ENVIRONMENTS)]
    # an environment the project venv has as an editable install, but no wheel here: unreachable
    found = subprocess.run([python, "-c", f"import importlib.util, json, {', '.join(packages)}; "
                            f"print(json.dumps([m.__file__ for m in ({', '.join(packages)})]));"
                            "print(importlib.util.find_spec('gym_ray_env_math'))"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.splitlines()
    folders = [Path(f).parent for f in json.loads(found[0])]
    assert all(f.is_relative_to(tmp_path / "venv") for f in folders), folders
    assert found[1] == "None"

    # each environment's packaged config as is (its data path resolves inside the installed package)
    run = {"includes": [str(f / "config.yaml") for f in folders[1:]],
           "model": {"kind": "scripted", "replies": [SOLUTION]}}
    (work / "run.yaml").write_text(json.dumps(run))  # JSON is YAML
    out = tmp_path / "out"
    done = subprocess.run(
        [tmp_path / "venv" / "bin" / "gym-ray", "run", "run.yaml", "collect.limit=2", "collect.num_repeats=1",
         f"collect.output_dir={out}", "ray.num_cpus=2", f"ray.http_port={free_port()}"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_rollout_table(out).to_pylist()
    assert sorted((r["env"], r["task_id"]) for r in rows) == [
        ("code", "code-0"), ("code", "code-1"), ("weather", "weather-0"), ("weather", "weather-1")]
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows]
    assert [r["reward"] for r in rows if r["env"] == "code"] == [1.0, 1.0]
    assert (out / ".gym_ray" / "report.html").stat().st_size > 0
