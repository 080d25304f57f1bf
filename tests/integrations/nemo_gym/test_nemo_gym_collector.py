"""NeMo Gym's real collector + simple_agent + openai_model against gym_ray's resources servers (issue 11).

`gym-ray export nemo-gym` writes the rows, `write_nemo_gym_dir` the NeMo Gym config (the env served on
Ray Serve, reached through the forwarder NeMo Gym starts on a port of its own), and NeMo Gym 0.4.0 and
0.7.0 run the episodes; the policy is a scripted Responses-API endpoint that solves every task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nemo_gym_procs import NgRun, collect, link_nemo_gym_venvs, nemo_venv, start_policy, write_model_config
from nemo_rl_contract import nemo_rl_message_log
from ports import free_port
from ray import serve

from gym_ray.cli import main as gym_ray_main
from gym_ray.config import load_config
from gym_ray.integrations.nemo_gym.resources import write_nemo_gym_dir
from gym_ray.resources import deploy_env

ROOT = Path(__file__).parents[3]
WEATHER = ROOT / "gym_ray" / "environments" / "weather"
REPEATS = 9  # 6 tasks x 9 = 54 episodes


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


@pytest.mark.slow
@pytest.mark.parametrize("version", ["0.4", "0.7"])
def test_nemo_gym_collector_against_gym_ray_weather(version, weather_url, policy_port, tmp_path, capsys):
    venv = nemo_venv(version)
    rows = tmp_path / "weather.jsonl"
    assert gym_ray_main(["export", "nemo-gym", str(WEATHER / "data" / "example.jsonl"), str(rows)]) == 0
    nemo_dir = tmp_path / "nemo"
    config = write_nemo_gym_dir({"weather": weather_url}, nemo_dir)
    link_nemo_gym_venvs(nemo_dir, venv)
    head_port = free_port()
    model = write_model_config(nemo_dir, head_port, policy_port)
    sessions = serve.get_app_handle("weather-ng").num_sessions
    before = sessions.remote().result()
    ng = NgRun(venv, nemo_dir, [config.name, model.name])
    try:
        out = tmp_path / "rollouts.jsonl"
        done = collect(venv, nemo_dir, head_port, rows, out, REPEATS)
    finally:
        ng.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(line) for line in out.read_text().splitlines()]
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


RUN_YAML = """
includes: [{weather}/config.yaml]
model: {{kind: scripted, hosting: local, script: "fault_helpers:weather_reply", chat_template: chatml_tools}}
envs: {{weather: {{hosting: local}}}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", ["0.4", "0.7"])
def test_nemo_gym_collector_calls_gym_ray_run_agent_server(version, tmp_path):
    """NeMo Gym's collector POSTs each row to gym_ray's /run; every result passes NeMo-RL's contiguity check."""
    venv = nemo_venv(version)
    rows = tmp_path / "weather.jsonl"
    assert gym_ray_main(["export", "nemo-gym", str(WEATHER / "data" / "example.jsonl"), str(rows),
                         "--agent-name", "weather_gym_ray_agent"]) == 0
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(RUN_YAML.format(weather=WEATHER))
    nemo_dir = tmp_path / "nemo"
    config = write_nemo_gym_dir({}, nemo_dir, agent_servers={"weather_gym_ray_agent": run_yaml})
    link_nemo_gym_venvs(nemo_dir, venv)
    head_port = free_port()
    head = nemo_dir / "head.yaml"
    head.write_text(f"head_server: {{host: 127.0.0.1, port: {head_port}}}\n")
    ng = NgRun(venv, nemo_dir, [config.name, head.name])
    try:
        out = tmp_path / "rollouts.jsonl"
        done = collect(venv, nemo_dir, head_port, rows, out, REPEATS)
    finally:
        ng.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 6 * REPEATS and {r["reward"] for r in results} == {1.0}
    logs = {(r["_ng_task_index"], r["_ng_rollout_index"]): nemo_rl_message_log(r) for r in results}
    assert sorted(logs) == [(t, i) for t in range(6) for i in range(REPEATS)]
    for t in range(6):  # GRPO's grouping key: one first prompt per task
        assert len({tuple(logs[t, i][0]["token_ids"]) for i in range(REPEATS)}) == 1
    assert len({r["episode_id"]["rollout_id"] for r in results}) == 6 * REPEATS
