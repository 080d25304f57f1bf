"""`gym-ray init env NAME`: a new environment package, laid out as the shipped ones, that runs at once.

The files are package data (`templates/common/` and `templates/<kind>/`, rendered with `string.Template`),
so a template reads as the file it becomes. Each kind ships a scripted policy (`policy.py`, named by the
config's `model.script`) that solves its five example tasks: the first run scores 1.0, which shows the
server, the agent and the data wired together before any model is involved.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from gym_ray.environments import entry_points

KINDS = ("tool", "step", "code")
DESCRIPTIONS = {
    "tool": "One tool call; the answer must name what the tool returned.",
    "step": "An addition drill played step by step (reset/step), scored by the share answered right.",
    "code": "Python functions judged by their tests in the bubblewrap sandbox.",
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# template file -> the file it becomes ("{name}" is the environment's name)
_FILES = {
    "common/pyproject.toml.tmpl": "pyproject.toml",
    "common/__init__.py.tmpl": "__init__.py",
    "{kind}/server.py.tmpl": "server.py",
    "{kind}/policy.py.tmpl": "policy.py",
    "{kind}/config.yaml.tmpl": "config.yaml",
    "{kind}/example.jsonl.tmpl": "data/example.jsonl",
    "{kind}/README.md.tmpl": "README.md",
    "{kind}/test.py.tmpl": "test_{name}.py",
}


class ScaffoldError(ValueError):
    """The name, kind or target folder is unusable; the message names which and why."""


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or keyword.iskeyword(name) or name.endswith("_"):
        raise ScaffoldError(f"environment name {name!r}: use lowercase letters, digits and underscores, "
                            "starting with a letter (at most 40), e.g. my_env")
    if name in entry_points():
        raise ScaffoldError(f"environment name {name!r}: an installed package already registers it "
                            f"({entry_points()[name].value}); choose another name")


def values(name: str, kind: str, folder: str) -> dict[str, str]:
    """What the templates' `$placeholders` stand for."""
    return {
        "name": name,
        "title": name.replace("_", " ").capitalize(),
        "cls": "".join(part.capitalize() for part in name.split("_")),
        "package": f"gym_ray_env_{name}",
        "dist": f"gym-ray-env-{name.replace('_', '-')}",
        "folder": folder,
        "description": DESCRIPTIONS[kind],
    }


def init_env(name: str, kind: str = "tool", parent: str | Path = "environments") -> Path:
    """Write environment `name` of `kind` into `parent/name` (which must not exist); return that folder."""
    if kind not in KINDS:
        raise ScaffoldError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    check_name(name)
    folder = Path(parent) / name
    if folder.exists():
        raise ScaffoldError(f"{folder}: already exists; choose another name or --dir")
    if Path(parent).exists() and not Path(parent).is_dir():
        raise ScaffoldError(f"--dir {parent}: not a directory")
    subs = values(name, kind, folder.as_posix())
    templates = resources.files(__package__) / "templates"
    rendered = {}
    for source, target in _FILES.items():
        text = (templates / source.format(kind=kind)).read_text(encoding="utf-8")
        rendered[target.format(name=name)] = Template(text).substitute(subs)
    for target, text in rendered.items():
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def next_steps(folder: Path, name: str, installed: bool = False) -> str:
    """The commands that follow `init env`: the run needs the package installed (its entry point names
    `server: <name>` and the scripted policy imports it, in every Ray worker), the check does not."""
    steps = [] if installed else [(f"pip install -e {folder}", f"registers `server: {name}` (the run needs it)")]
    steps += [(f"gym-ray env check {folder}", "imports, schemas, task rows, a round trip per task"),
             (f"gym-ray run {folder}/config.yaml", "the scripted policy: every task scores 1.0"),
             (f"pytest {folder}", "the package's own test")]
    width = max(len(command) for command, _ in steps)
    return "\n".join([
        f"wrote {folder}/ (server.py, policy.py, config.yaml, data/example.jsonl, README.md, test_{name}.py)"
        + (f", installed as gym-ray-env-{name.replace('_', '-')}" if installed else ""),
        "next:", *(f"  {command.ljust(width)}  # {why}" for command, why in steps)])
