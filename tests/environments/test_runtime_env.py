"""An environment package the driver does not have reaches the env's Serve replicas through Ray's own
`runtime_env` (`py_modules`, a `local://` directory as on a shared filesystem): a scripted-policy run over it
scores 1.0, and the driver never imports it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gym_ray.cli import main
from gym_ray.config import ConfigError, load_config
from gym_ray.rundir import read_rollout_table
from gym_ray.types import rollouts_from_arrow

PACKAGE = "gym_ray_env_tiny"  # written into tmp_path; installed nowhere
SERVER = '''
from gym_ray.resources import ResourceServer, final_answer, tool, tool_results


class Tiny(ResourceServer):
    @tool
    def secret(self) -> str:
        """The word to answer with."""
        return "tangerine"

    def verify(self, task, messages):
        return float(tool_results(messages, "secret") == ["tangerine"] and final_answer(messages) == "tangerine")
'''


def write_run(tmp_path: Path, **env: object) -> Path:
    """The tiny package under tmp_path/pkgs (a directory Ray puts on the replicas' path), its tasks, and a
    run config naming it by module:Class."""
    package = tmp_path / "pkgs" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "server.py").write_text(SERVER)
    rows = [{"task_id": f"tiny-{i}", "prompt": [{"role": "user", "content": "Say the secret word."}]} for i in range(3)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "model": {"kind": "scripted", "hosting": "local", "chat_template": "chatml_tools",
                  "replies": [{"name": "secret", "arguments": {}}, "tangerine"]},
        "envs": {"tiny": {"server": f"{PACKAGE}.server:Tiny", "data": ["tasks.jsonl"], "hosting": "serve",
                          "runtime_env": {"py_modules": [f"local://{tmp_path / 'pkgs'}"]}, "agent": {"max_turns": 3}, **env}},
        "collect": {"output_dir": str(tmp_path / "out"), "num_repeats": 2},
    }))
    return config


def test_runtime_env_takes_uris_and_needs_serve_hosting(tmp_path):
    config = write_run(tmp_path)
    assert load_config(config).envs["tiny"].runtime_env == {"py_modules": [f"local://{tmp_path / 'pkgs'}"]}
    with pytest.raises(ConfigError) as e:
        load_config(config, ["envs.tiny.runtime_env.py_modules=[pkgs]"])
    assert str(e.value).count("\n") == 0 and "envs.tiny.runtime_env" in str(e.value)
    assert "runtime_env.py_modules[0]: 'pkgs' is a local path; a Serve replica takes a URI" in str(e.value)
    with pytest.raises(ConfigError, match=r"envs\.tiny: .*runtime_env applies to the Serve replicas: it needs hosting: serve"):
        load_config(config, ["envs.tiny.hosting=local"])


def test_env_package_only_in_the_replicas_runtime_env_scores_1(tmp_path, serve_http_port, capsys):
    config = write_run(tmp_path)
    assert importlib.util.find_spec(PACKAGE) is None
    rc = main(["run", str(config)])
    assert rc == 0, capsys.readouterr().err[-3000:]
    rows = rollouts_from_arrow(read_rollout_table(tmp_path / "out"))
    assert len(rows) == 3 * 2
    assert {(r.status.value, r.reward) for r in rows} == {("ok", 1.0)}, [r.error for r in rows]
    assert importlib.util.find_spec(PACKAGE) is None  # the driver still cannot import it
