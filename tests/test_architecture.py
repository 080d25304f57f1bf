"""The shape the suite holds the library to: imports only point down (import-linter's contracts in
pyproject.toml) and a module stays short enough to read in one sitting."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 500
# Over MAX_LINES and still to be split; reported on every run, and no other module may join them.
LONG_MODULES: set[str] = set()


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the `gym_ray` package found under `root`, with the project's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )


def test_imports_point_down():
    result = lint_imports(ROOT)
    assert result.returncode == 0, f"an import breaks a contract:\n{result.stdout}{result.stderr}"


def test_an_import_that_climbs_fails_naming_it(tmp_path):
    shutil.copytree(ROOT / "gym_ray", tmp_path / "gym_ray", ignore=shutil.ignore_patterns("__pycache__"))
    stats = tmp_path / "gym_ray" / "stats.py"
    stats.write_text(stats.read_text() + "\nfrom gym_ray.collect.metrics import format_table  # noqa: E402, F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gym_ray.stats -> gym_ray.collect.metrics" in result.stdout, result.stdout


def test_every_part_of_gym_ray_has_a_layer():
    """A part no layer names is checked by no contract: its imports could climb unnoticed."""
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {part.strip(" ()") for layer in layers for part in layer.replace(":", "|").split("|")}
    parts = {p.stem for p in (ROOT / "gym_ray").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert parts <= named, f"parts of gym_ray in no layer of pyproject.toml's layers contract: {sorted(parts - named)}"


def _strings(tree: ast.AST) -> list[str]:
    """The string constants of a module, its docstrings left out."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_the_core_names_no_adapter_class():
    """Below the adapters' layer, no module names an adapter's class by `module:Class` (a string import
    climbs unseen by import-linter): `server: <adapter>:<name>` reaches it through the `gym_ray.adapters`
    entry points."""
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    top = next(i for i, layer in enumerate(layers) if "integrations" in layer)
    below = {part.strip() for layer in layers[top + 1:] for part in layer.split("|")}
    named = re.compile(r"gym_ray\.integrations\.[\w.]+:\w+")
    found = [f"{path.relative_to(ROOT)}: {text!r}" for part in sorted(below)
             for path in [*(ROOT / "gym_ray" / part).rglob("*.py"), (ROOT / "gym_ray" / f"{part}.py")]
             if path.is_file() for text in _strings(ast.parse(path.read_text())) if named.search(text)]
    assert found == []


def test_no_module_over_max_lines():
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "gym_ray").rglob("*.py")}
    long = {path: n for path, n in sorted(lines.items()) if n > MAX_LINES}
    if long.keys() & LONG_MODULES:
        warnings.warn(f"modules over {MAX_LINES} lines, still to be split: "
                      + ", ".join(f"{path} ({long[path]})" for path in sorted(long.keys() & LONG_MODULES)),
                      stacklevel=1)
    assert long.keys() <= LONG_MODULES, f"over {MAX_LINES} lines: {long}"
