"""environments/README.md's catalogue is what ships: one row per environment folder, the count it states is
the folders' count, each row's command names that env's config, its kind matches the agent, and each folder
is an installed package whose entry point the config's short name resolves to (or a verifiers package)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gym_ray.catalogue import installed
from gym_ray.cli import main
from gym_ray.config import load_config
from gym_ray.environments import entry_points
from gym_ray.resources.runtime import import_server

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ROOT / "environments"


def catalogue() -> tuple[int, dict[str, list[str]]]:
    text = (ENVIRONMENTS / "README.md").read_text()
    section = text.split("## Catalogue\n", 1)[1].split("\n## ", 1)[0]
    stated = int(re.search(r"^(\d+) environments ship", section, re.M).group(1))
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells
    return stated, rows


def test_the_catalogue_lists_every_environment_folder_once():
    stated, rows = catalogue()
    folders = sorted(p.parent.name for p in ENVIRONMENTS.glob("*/config.yaml"))
    assert sorted(rows) == folders
    assert stated == len(folders) == len(rows)
    for name, (_, kind, _, verifier, origin, command) in rows.items():
        assert verifier and origin, name
        argv = shlex.split(command.strip("`"))
        assert argv[:3] == ["gym-ray", "run", f"environments/{name}/config.yaml"], name
        assert "model.kind=scripted" in argv, name
        env = load_config(ROOT / argv[2], argv[3:]).envs[name]
        step = env.agent.cls == "gym_ray.agents.env_step:EnvStepAgent"
        assert kind.startswith("env step") == step, (name, kind, env.agent.cls)
        assert (ENVIRONMENTS / name / "README.md").is_file(), name


def test_every_folder_is_an_installed_package_its_config_names_by_entry_point():
    _, rows = catalogue()
    registered = entry_points()
    for name, (_, _, tools, _, origin, _) in rows.items():
        config = ENVIRONMENTS / name / "config.yaml"
        server = re.search(r"^    server: (\S+)$", config.read_text(), re.M).group(1)
        if server.startswith("verifiers:"):  # a verifiers package, found by verifiers' own loader
            assert f"`{server}`" in origin, name
            continue
        assert server == name, f"{config}: server: {server} (expected the short name {name})"
        ep = registered[name]
        assert ep.dist.name == f"gym-ray-env-{name.replace('_', '-')}", ep.dist.name
        assert ep.module.startswith(f"gym_ray_env_{name}."), ep.value
        assert load_config(config).envs[name].server == ep.value
        for tool in import_server(ep.value).tool_defs:
            assert f"`{tool}`" in tools, (name, tool)


def test_gym_ray_envs_lists_each_package_as_the_catalogue_does(capsys):
    """What `gym-ray envs` says of each environment package is the catalogue's row: the kind it derives
    from the server class starts the row's kind, and the class's verifier and origin are the row's."""
    _, rows = catalogue()
    packages = {p.name: p for p in installed()}
    assert set(packages) == {n for n in rows if (ENVIRONMENTS / n / "server.py").is_file()}
    for name, p in packages.items():
        _, kind, _, verifier, origin, _ = rows[name]
        assert kind.startswith(p.kind) and (p.verifier, p.origin) == (verifier, origin), name
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for p in packages.values():
        assert re.search(rf"^{p.name} +{p.kind} .*{re.escape(p.package)}$", out, re.M), p.name
