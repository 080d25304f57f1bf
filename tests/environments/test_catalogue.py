"""environments/README.md's catalogue is generated from what ships: regenerating it changes nothing, each
folder is an installed package whose entry point its config's short name resolves to (or a verifiers package),
each row's command runs that env's config, and `gym-ray envs` says of each package what the catalogue says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gym_ray.catalogue import BEGIN, END, Row, installed, markdown, reachable, shipped, splice
from gym_ray.cli import main
from gym_ray.config import load_config
from gym_ray.environments import entry_points
from gym_ray.resources.runtime import import_server

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ROOT / "environments"


def test_the_readme_catalogue_is_the_generated_one(capsys):
    rows = shipped(ROOT)
    assert sorted(r.name for r in rows) == sorted(p.parent.name for p in ENVIRONMENTS.glob("*/config.yaml"))
    section = markdown(rows, reachable(ROOT, measured_only=True))
    readme = (ENVIRONMENTS / "README.md").read_text()
    assert section in readme, "environments/README.md is stale: run `gym-ray envs --markdown . --write`"
    assert main(["envs", "--markdown", str(ROOT)]) == 0
    assert capsys.readouterr().out.strip() == section
    stated = int(re.search(r"^(\d+) environments ship here", section, re.M).group(1))
    assert stated == len(rows) == section.count("\n| `")
    # a stale section is replaced whole, the text around it kept
    assert splice(f"a\n{BEGIN}\nold\n{END}\nb", section) == f"a\n{section}\nb"


def test_each_row_names_its_config_and_its_kind_matches_the_agent():
    for row in shipped(ROOT):
        assert row.verifier and row.origin and row.metric in {"pass@k", "accuracy", "success_rate", "mean_reward"}
        argv = shlex.split(row.command)
        assert argv[:3] == ["gym-ray", "run", f"environments/{row.name}/config.yaml"], row.name
        assert "model.kind=scripted" in argv, row.name
        env = load_config(ROOT / argv[2], argv[3:]).envs[row.name]
        step = env.agent.cls == "gym_ray.agents.env_step:EnvStepAgent"
        assert row.kind.startswith("env step") == step, (row.name, row.kind, env.agent.cls)
        assert (ENVIRONMENTS / row.name / "README.md").is_file(), row.name


def test_every_folder_is_an_installed_package_its_config_names_by_entry_point():
    registered = entry_points()
    for row in shipped(ROOT):
        name = row.name
        config = ENVIRONMENTS / name / "config.yaml"
        server = re.search(r"^    server: (\S+)$", config.read_text(), re.M).group(1)
        if server.startswith("verifiers:"):  # a verifiers package, found by verifiers' own loader
            assert f"`{server}`" in row.origin, name
            continue
        assert server == name, f"{config}: server: {server} (expected the short name {name})"
        ep = registered[name]
        assert ep.dist.name == f"gym-ray-env-{name.replace('_', '-')}", ep.dist.name
        assert ep.module.startswith(f"gym_ray_env_{name}."), ep.value
        assert load_config(config).envs[name].server == ep.value
        for tool in import_server(ep.value).tool_defs:
            assert f"`{tool}`" in markdown([row], []), (name, tool)


def test_gym_ray_envs_lists_each_package_as_the_catalogue_does(capsys):
    """What `gym-ray envs` says of each environment package is the catalogue's row: the kind it derives
    from the server class starts the row's kind, and the class's verifier and origin are the row's."""
    rows: dict[str, Row] = {r.name: r for r in shipped(ROOT)}
    packages = {p.name: p for p in installed()}
    assert set(packages) == {n for n in rows if (ENVIRONMENTS / n / "server.py").is_file()}
    for name, p in packages.items():
        row = rows[name]
        # a class with reset/step may be played by a tool-calling agent its config names (tau2_bench's)
        assert row.kind == p.kind or p.kind == "env step", name
        assert (p.verifier, p.origin) == (row.verifier, row.origin), name
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for p in packages.values():
        assert re.search(rf"^{p.name} +{p.kind} .*{re.escape(p.package)}$", out, re.M), p.name
