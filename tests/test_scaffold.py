"""`gym-ray init env`: each kind's package is laid out as the shipped ones, lint-clean, and runs at once: its
scripted policy solves all five example tasks in-process, before the package is installed."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gym_ray.cli import main
from gym_ray.envcheck import check_env
from gym_ray.scaffold import KINDS, ScaffoldError, init_env
from gym_ray.tasks import load_tasks

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_environment_is_a_package_that_scores_one_before_install(tmp_path, kind):
    name = f"fresh_{kind}"
    folder = init_env(name, kind, tmp_path)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "__init__.py", "config.yaml", "data/example.jsonl", "policy.py",
                     "pyproject.toml", "server.py", f"test_{name}.py"]
    meta = tomllib.loads((folder / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"gym-ray-env-fresh-{kind}"
    assert meta["project"]["entry-points"]["gym_ray.environments"] == {
        name: f"gym_ray_env_{name}.server:Fresh{kind.capitalize()}"}
    assert meta["tool"]["setuptools"]["package-dir"] == {f"gym_ray_env_{name}": "."}
    assert len(load_tasks([folder / "data" / "example.jsonl"])) == 5

    report = check_env(str(folder))
    assert [(f.check, f.target, f.detail) for f in report.findings if f.status != "ok"] == []
    trips = [f for f in report.findings if f.check == "round trip"]
    assert [(f.target, f.detail) for f in trips] == [
        (f"{name}-{i}", "scripted episode scored 1") for i in range(5)]


def test_the_generated_code_is_lint_clean(tmp_path):
    for kind in KINDS:
        init_env(f"lint_{kind}", kind, tmp_path)
    out = subprocess.run([str(RUFF), "check", "--config", str(ROOT / "pyproject.toml"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_init_prints_the_next_commands(tmp_path, capsys):
    assert main(["init", "env", "shop", "--kind", "tool", "--dir", str(tmp_path), "--no-install"]) == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "shop"
    for command in (f"pip install -e {folder}", f"gym-ray env check {folder}",
                    f"gym-ray run {folder}/config.yaml"):
        assert command in printed
    row = json.loads((folder / "data" / "example.jsonl").read_text().splitlines()[0])
    assert (row["task_id"], row["env"]) == ("shop-0", "shop")


@pytest.mark.parametrize(("argv", "says"), [
    (["init", "env", "Bad-Name"], "environment name 'Bad-Name': use lowercase letters"),
    (["init", "env", "class"], "environment name 'class'"),
    (["init", "env", "weather"], "an installed package already registers it"),
    (["init", "env", "ok_name", "--kind", "game"], "--kind 'game': choose one of tool, step, code"),
])
def test_a_bad_name_or_kind_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    assert main([*argv, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused_untouched(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["init", "env", "taken", "--dir", str(tmp_path)]) == 2
    assert f"{tmp_path / 'taken'}: already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
    with pytest.raises(ScaffoldError, match="not a directory"):
        (tmp_path / "file").write_text("")
        init_env("other", "tool", tmp_path / "file")
