"""Every part is built once before collecting: a part that cannot be built is exit 2 and one line naming
its key and the cause, never a run of 100% error rows that exits 0 nor Serve's bare "Failed to update"."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gym_ray.cli import main
from gym_ray.config import ConfigError, validate_config
from gym_ray.launch.preflight import check_parts
from gym_ray.resources import ResourceServer
from gym_ray.serving.failures import failure_cause  # imports Serve (and its log handler) outside any capsys

JUDGE = "gym_ray_env_judge.server:Judge"  # its constructor raises without `config.judge`


class Unreachable(ResourceServer):
    def __init__(self, url: str = "db:5432"):
        raise ConnectionError(f"cannot reach {url}")


def _config(tmp_path: Path, envs: dict, model: dict | None = None) -> Path:
    (tmp_path / "tasks.jsonl").write_text('{"task_id": "a", "prompt": "What is the weather in Paris?"}\n')
    for env in envs.values():
        env["data"] = [str(tmp_path / "tasks.jsonl")]
    p = tmp_path / "run.yaml"
    p.write_text(json.dumps({"model": model or {"kind": "scripted", "hosting": "local"}, "envs": envs,
                             "collect": {"output_dir": str(tmp_path / "out"), "limit": 1}}))
    return p


def _env(server: str, hosting: str, **extra) -> dict:
    return {"server": server, "hosting": hosting, **extra}


def _fails_with(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gym-ray: error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("env", "model", "expected"), [
    (_env("gym_ray_env_nope:Weather", "local"), None,
     ["envs.w.server: server 'gym_ray_env_nope:Weather': cannot import module"]),
    (_env("gym_ray_env_weather.server:Nope", "local"), None, ["envs.w.server:", "not a ResourceServer subclass"]),
    (_env(JUDGE, "local"), None, ["envs.w.config: judge: name the judge model"]),
    (_env("gym_ray_env_math.server:Math", "local", config={"timeout": 3}), None,
     ["envs.w.config: Math rejected its settings", "'timeout'"]),
    (_env("test_preflight:Unreachable", "local"), None, ["envs.w.config: ConnectionError: cannot reach db:5432"]),
    (_env("gym_ray_env_weather.server:Weather", "local", agent={"cls": "gym_ray.agents.nope:Agent"}), None,
     ["envs.w.agent.cls: ImportError: cannot import 'gym_ray.agents.nope:Agent'"]),
    (_env("gym_ray_env_weather.server:Weather", "local"), {"kind": "scripted", "hosting": "local",
                                                            "script": "nomod:reply"},
     ["model.script: cannot load 'nomod:reply': No module named 'nomod'"]),
    (_env("gym_ray_env_weather.server:Weather", "local"), {"kind": "scripted", "hosting": "local",
                                                            "replies": [{"arguments": {}}]},
     ["model.replies[0]: expected a string or {name, arguments}"]),
    (_env("gym_ray_env_weather.server:Weather", "local", agent={"kwargs": {"rerendr": True}}), None,
     ["envs.w.agent.kwargs: ToolCallingAgent: unknown option 'rerendr' (its options: max_context_len, rerender,"]),
    (_env("gym_ray_env_weather.server:Weather", "local",
          agent={"cls": "gym_ray.gateway.agent:ExternalAgent", "kwargs": {"comand": "python a.py"}}), None,
     ["envs.w.agent.kwargs: ExternalAgent: unknown option 'comand'"]),
    (_env("gym_ray_env_weather.server:Weather", "local", agent={"kwargs": {"cache_tools": "sometimes"}}), None,
     ["envs.w.agent.kwargs: ToolCallingAgent: option 'cache_tools': Input should be a valid boolean"]),
    (_env("blackjack", "local", agent={"cls": "gym_ray.agents.tool_calling:ToolCallingAgent"}), None,
     ["envs.w.agent.cls: env 'w': Blackjack is step-driven (reset/step, no tools) but agent.cls is the "
      "tool-calling agent; set agent.cls: gym_ray.agents.env_step:EnvStepAgent or leave agent.cls out"]),
    (_env("weather", "local", agent={"cls": "gym_ray.agents.env_step:EnvStepAgent"}), None,
     ["envs.w.agent.cls: env 'w': agent.cls is the env-step agent but Weather implements no reset/step"]),
], ids=["import", "not-a-server", "constructor", "bad-setting", "any-exception", "agent", "script", "reply",
        "agent-option", "external-agent-option", "agent-option-type", "tool-agent-on-step-env",
        "step-agent-on-tool-env"])
def test_local_parts_are_built_before_anything_starts(tmp_path, capsys, env, model, expected):
    cfg = _config(tmp_path, {"w": env}, model)
    _fails_with(capsys, ["run", str(cfg)], f"{cfg}: ", *expected)
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_the_agent_is_chosen_for_the_server_when_the_config_names_none():
    from gym_ray.agents.choose import agent_class
    from gym_ray.agents.env_step import EnvStepAgent
    from gym_ray.agents.tool_calling import ToolCallingAgent

    cfg = validate_config({"envs": {"cards": _env("blackjack", "local"), "tools": _env("weather", "local"),
                                    "elsewhere": _env("elsewhere.only:Server", "serve")}})
    assert agent_class(cfg.envs["cards"]) is EnvStepAgent  # reset/step, no tools
    assert agent_class(cfg.envs["tools"]) is ToolCallingAgent
    assert agent_class(cfg.envs["elsewhere"]) is ToolCallingAgent  # not importable here: the default
    check_parts(cfg, "c.yaml", hosted=False)  # and preflight takes them as they are


def test_collect_builds_local_parts_but_not_the_served_ones():
    cfg = validate_config({"envs": {"served": _env("elsewhere.only:Server", "serve"),
                                    "local": _env(JUDGE, "local")}})
    with pytest.raises(ConfigError, match=r"^c\.yaml: envs\.local\.config: judge: name the judge model"):
        check_parts(cfg, "c.yaml", hosted=False)
    with pytest.raises(ConfigError, match=r"^c\.yaml: envs\.served\.server: .*cannot import module 'elsewhere"):
        check_parts(cfg, "c.yaml")


def _no_app(name: str) -> bool:
    from ray import serve

    return name not in serve.status().applications


def test_served_env_that_cannot_start_names_the_env_and_the_replicas_exception(tmp_path, serve_http_port, capsys):
    cfg = _config(tmp_path, {"pf_judge": _env(JUDGE, "serve")})
    line = _fails_with(capsys, ["run", str(cfg)], "envs.pf_judge: deployment failed: ValueError: judge: name the judge")
    assert "Failed to update" not in line
    assert _no_app("pf_judge")  # the failed app was deleted again
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.slow  # ~45 s here: each of Serve's 3 tries starts a replica that imports transformers
def test_served_policy_that_cannot_start_names_the_model_and_the_replicas_exception(
        tmp_path, serve_http_port, capsys):
    cfg = _config(tmp_path, {"w": _env("gym_ray_env_weather.server:Weather", "local")},
                  {"kind": "scripted", "name": "pf_policy", "script": "nomod:reply"})
    line = _fails_with(capsys, ["run", str(cfg)], "model 'pf_policy': deployment failed:",
                       "model.script: cannot load 'nomod:reply': No module named 'nomod'")
    assert "Failed to update" not in line
    assert _no_app("pf_policy")


def test_failure_cause_is_the_last_line_of_the_replicas_traceback():
    err = RuntimeError(textwrap.dedent("""\
        Deploying application x failed: Traceback (most recent call last):
          File "a.py", line 1, in <module>
        \x1b[36mValueError: bad\x1b[39m
    """))
    assert failure_cause("no-such-app-here", err) == "ValueError: bad"


def test_policy_deployment_failure_is_reported_with_the_replicas_exception(monkeypatch, default_model_path):
    """The fast twin of the test above: Serve's own error and status, as a failed replica leaves them."""
    from types import SimpleNamespace

    from ray import serve

    from gym_ray.config import ModelConfig
    from gym_ray.models.deploy import deploy_policy
    from gym_ray.serving.failures import DeploymentError

    def failed_run(*args, **kwargs):
        raise RuntimeError("Deploying application pf failed: Failed to update the deployments ['ScriptedPolicy'].")

    replica = SimpleNamespace(status="DEPLOY_FAILED", message=(
        "The deployment failed to start 3 times in a row. Error:\nTraceback (most recent call last):\n"
        '  File "scripted.py", line 37, in load_script\n'
        "gym_ray.models.scripted.ScriptError: model.script: cannot load 'nomod:reply'\n"))
    status = SimpleNamespace(applications={"pf": SimpleNamespace(deployments={"ScriptedPolicy": replica})})
    monkeypatch.setattr(serve, "run", failed_run)
    monkeypatch.setattr(serve, "status", lambda: status)
    cfg = ModelConfig(kind="scripted", name="pf", script="nomod:reply")
    with pytest.raises(DeploymentError, match=r"^model 'pf': deployment failed: gym_ray\.models\.scripted\.ScriptError: "
                                              r"model\.script: cannot load 'nomod:reply'$"):
        deploy_policy(cfg, app_name="pf")
