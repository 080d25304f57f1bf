"""The README's environment catalogue is what ships: one row per environment folder, the count it states
is the folders' count, each row's command names that env's config, and its kind matches the agent."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gym_ray.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def catalogue() -> tuple[int, dict[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Environment catalogue\n", 1)[1].split("\n## ", 1)[0]
    stated = int(re.search(r"^(\d+) environments ship", section, re.M).group(1))
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells
    return stated, rows


def test_the_catalogue_lists_every_environment_folder_once():
    stated, rows = catalogue()
    folders = sorted(p.parent.name for p in (ROOT / "gym_ray" / "environments").glob("*/config.yaml"))
    assert sorted(rows) == folders
    assert stated == len(folders) == len(rows)
    for name, (_, kind, _, verifier, origin, command) in rows.items():
        assert verifier and origin, name
        argv = shlex.split(command.strip("`"))
        assert argv[:3] == ["gym-ray", "run", f"gym_ray/environments/{name}/config.yaml"], name
        assert "model.kind=scripted" in argv, name
        env = load_config(ROOT / argv[2], argv[3:]).envs[name]
        step = env.agent.cls == "gym_ray.agents.env_step:EnvStepAgent"
        assert kind.startswith("env step") == step, (name, kind, env.agent.cls)
        assert (ROOT / "gym_ray" / "environments" / name / "README.md").is_file(), name
