"""NeMo Gym's real processes with gym_ray, both ways, for NeMo Gym 0.4.0 and 0.7.0.

One `ng_run` per version (module-scoped: its Ray start is the slow part) serves everything:
- gym_ray's weather env (on Ray Serve, behind the forwarder NeMo Gym starts) with NeMo Gym's own
  simple_agent and openai_model, played by NeMo Gym's collector;
- gym_ray's `/run` agent server, called by NeMo Gym's collector;
- three of NeMo Gym's own resources servers, driven by gym_ray's agents through the bridge env into
  gym_ray Parquet.
The policies are scripted: a Responses-API endpoint for NeMo Gym's agent, gym_ray's scripted policy else.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import fault_helpers
import nemo_gym_scripts
import pytest
import ray
from fault_helpers import ScriptClient
from nemo_gym_procs import (
    NEMO_GYM_SERVERS,
    TESTS_ON_PATH,
    collect,
    model_blocks,
    nemo_venv,
    start_policy,
    write_yaml,
)
from nemo_rl_contract import nemo_rl_message_log
from ports import free_port
from ray import serve

from gym_ray.cli import main as gym_ray_main
from gym_ray.collect.api import Collector, load_run_tasks
from gym_ray.config import RunConfig, load_config
from gym_ray.integrations.nemo_gym.launch import (
    LaunchError,
    NgRun,
    link_venvs,
    nemo_gym_root,
    resources_server_blocks,
    serve_resources_servers,
)
from gym_ray.integrations.nemo_gym.resources import write_nemo_gym_dir
from gym_ray.models.names import tokenizer_path_for
from gym_ray.report.checks import run_checks
from gym_ray.resources.serve import deploy_env
from gym_ray.rundir import read_rollout_table
from gym_ray.types import rollouts_from_arrow

ray.cloudpickle.register_pickle_by_value(fault_helpers)  # the scripts reach the agent actors by value
ray.cloudpickle.register_pickle_by_value(nemo_gym_scripts)

ROOT = Path(__file__).parents[3]
WEATHER = ROOT / "environments" / "weather"
REPEATS = 9  # 6 tasks x 9 = 54 episodes
# NeMo Gym's own resources servers gym_ray drives (all three ship with 0.4.0 and 0.7.0)
BRIDGED = ["example_single_tool_call", "example_session_state_mgmt", "example_multi_step"]
RUN_YAML = """
includes: [{weather}/config.yaml]
model: {{kind: scripted, hosting: local, script: "fault_helpers:weather_reply", chat_template: chatml_tools}}
envs: {{weather: {{hosting: local}}}}
"""


@dataclass
class Nemo:
    version: str
    venv: Path
    dir: Path
    ng: NgRun


@pytest.fixture(scope="module")
def weather_url(serve_http_port):
    cfg = load_config(WEATHER / "config.yaml").envs["weather"]
    app = deploy_env("weather-ng", cfg, route_prefix="/weather-ng")
    yield f"http://127.0.0.1:{serve_http_port}/weather-ng"
    serve.delete(app)


@pytest.fixture(scope="module")
def policy_port(tmp_path_factory):
    port = free_port()
    proc = start_policy(port, tmp_path_factory.mktemp("policy") / "policy.log")
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module", params=["0.4", "0.7"])
def nemo(request, weather_url, policy_port, tmp_path_factory):
    venv = nemo_venv(request.param)
    nemo_dir = tmp_path_factory.mktemp(f"nemo-{request.param}")
    run_yaml = nemo_dir / "run.yaml"
    run_yaml.write_text(RUN_YAML.format(weather=WEATHER))
    config = write_nemo_gym_dir({"weather": weather_url}, nemo_dir,
                                agent_servers={"weather_gym_ray_agent": run_yaml})
    link_venvs(nemo_dir, venv, NEMO_GYM_SERVERS)
    model = write_yaml(nemo_dir / "model.yaml", model_blocks(policy_port))
    ng = serve_resources_servers(venv, BRIDGED, nemo_dir, [config.name, model], env=TESTS_ON_PATH)
    yield Nemo(request.param, venv, nemo_dir, ng)
    ng.stop()


def export_weather(tmp_path: Path, *args: str) -> Path:
    rows = tmp_path / "weather.jsonl"
    assert gym_ray_main(["export", "nemo-gym", str(WEATHER / "data" / "example.jsonl"), str(rows), *args]) == 0
    return rows


@pytest.mark.slow
def test_nemo_gym_collector_against_gym_ray_weather(nemo, tmp_path):
    sessions = serve.get_app_handle("weather-ng").num_sessions
    before = sessions.remote().result()
    out = tmp_path / "rollouts.jsonl"
    results = collect(nemo.venv, nemo.dir, nemo.ng.head_port, export_weather(tmp_path), out, REPEATS)
    assert len(results) == 6 * REPEATS
    # every row was scored by gym_ray's weather verifier (its components), and the policy solves them all
    assert {r["reward"] for r in results} == {1.0}
    assert all(r["reward_components"] == {"called_tool": 1.0, "condition": 1.0, "temperature": 1.0}
               for r in results)
    assert {r["task_id"] for r in results} == {f"weather-{i}" for i in range(6)}
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in results) == [
        (t, i) for t in range(6) for i in range(REPEATS)]
    # /aggregate_metrics answered (the collector writes what the agent proxied from gym_ray)
    metrics = json.loads(next(tmp_path.glob("rollouts*aggregate_metrics*.json")).read_text())
    agent = metrics[0]["agent_metrics"]
    assert agent["mean/reward"] == 1.0 and agent["num_rollouts"] == 6 * REPEATS
    # NeMo Gym never calls /close_session: /verify ended every session
    assert sessions.remote().result() == before


@pytest.mark.slow
def test_nemo_gym_collector_calls_gym_ray_run_agent_server(nemo, tmp_path):
    """NeMo Gym's collector POSTs each row to gym_ray's /run; every result passes NeMo-RL's contiguity check."""
    rows = export_weather(tmp_path, "--agent-name", "weather_gym_ray_agent")
    results = collect(nemo.venv, nemo.dir, nemo.ng.head_port, rows, tmp_path / "rollouts.jsonl", REPEATS)
    assert len(results) == 6 * REPEATS and {r["reward"] for r in results} == {1.0}
    logs = {(r["_ng_task_index"], r["_ng_rollout_index"]): nemo_rl_message_log(r) for r in results}
    assert sorted(logs) == [(t, i) for t in range(6) for i in range(REPEATS)]
    for t in range(6):  # GRPO's grouping key: one first prompt per task
        assert len({tuple(logs[t, i][0]["token_ids"]) for i in range(REPEATS)}) == 1
    assert len({r["episode_id"]["rollout_id"] for r in results}) == 6 * REPEATS


@pytest.mark.slow
def test_gym_ray_agents_drive_nemo_gym_resources_servers(nemo, ray_cluster, tmp_path):
    """NeMo Gym's example_single_tool_call, example_session_state_mgmt and example_multi_step as gym_ray envs:
    their own data, tools, session cookies and verifiers, into Parquet that passes gym_ray's checks."""
    data = nemo_gym_root(nemo.venv) / "resources_servers"
    cfg = RunConfig.model_validate({
        "model": {"kind": "scripted", "hosting": "local", "chat_template": "chatml_tools", "replies": ["unused"]},
        "envs": {name: {"server": "gym_ray.integrations.nemo_gym.bridge:NemoGymResources", "hosting": "local",
                        "config": {"head_server": nemo.ng.head_url, "server": nemo.ng.instances[name]},
                        "data": [str(data / name / "data" / "example.jsonl")],
                        # example_multi_step's prompt is 3.4k tokens (the scripted policy has no context limit)
                        "agent": {"max_turns": 5, "max_total_tokens": 8192, "kwargs": {"max_context_len": 8192}}}
                 for name in BRIDGED},
        "collect": {"num_repeats": 4, "concurrency": 16},
    })
    out = tmp_path / "run"
    policy = ScriptClient(cfg.model, tokenizer_path_for(cfg.model), nemo_gym_scripts.reply)
    with Collector(cfg, policy) as col:
        summary = asyncio.run(col.collect_to_dir(load_run_tasks(cfg), out, progress=False))
    rows = rollouts_from_arrow(read_rollout_table(out))
    assert summary["overall"]["rollouts"] == 3 * 5 * 4 == len(rows)
    for r in rows:
        r.check_invariants()
    assert {r.status.value for r in rows} == {"ok"}
    # 1.0 from NeMo Gym's own verifiers: the counter saw every increment in its cookie session, the
    # synonym values came back from its tools, get_weather was called
    assert {(r.env, r.reward) for r in rows} == {(name, 1.0) for name in BRIDGED}
    counts = {r.env: r.num_tool_calls for r in rows}
    assert counts["example_single_tool_call"] == 1 and counts["example_multi_step"] == 3
    multi = next(r for r in rows if r.env == "example_multi_step")
    assert json.loads(multi.metrics_json)["verify_info"]["accuracy"] is True  # NeMo Gym's own response fields
    report = run_checks(out)
    assert not report.contract_broken, report.to_json()["counts"]


def test_an_unknown_nemo_gym_server_is_named_with_what_nemo_gym_ships():
    with pytest.raises(LaunchError, match=r"'no_such_env': not a resources server of .* \(it ships \d+: "):
        resources_server_blocks(nemo_venv("0.7"), "no_such_env")
