"""gym_ray's `/run` agent server against NeMo-RL's request and response shapes.

NeMo-RL does not install on Python 3.11, so its side is the recorded request in fixtures/ and a
re-implementation of what its `_postprocess_nemo_gym_to_nemo_rl_result` asserts: every trainable item's
`prompt_token_ids` starts with all tokens seen so far (`seen == prompt_token_ids[:len(seen)]`), and GRPO
groups (one `_ng_task_index`, identical first prompts). The slow test in test_nemo_gym_collector.py
drives the same server with NeMo Gym's own collector.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from nemo_rl_contract import nemo_rl_message_log

from gym_ray.agents.base import load_tokenizer
from gym_ray.config import ModelConfig, RunConfig, SamplingConfig, load_config
from gym_ray.integrations.nemo_gym.agent_server import AgentServer
from gym_ray.integrations.nemo_gym.tasks import export_nemo_gym
from gym_ray.models.client import make_policy_client
from gym_ray.models.scripted import ScriptedPolicy

ROOT = Path(__file__).parents[3]
FIXTURES = Path(__file__).with_name("fixtures")
WEATHER = ROOT / "environments" / "weather"


@pytest.fixture(scope="module")
def server():
    cfg = load_config(WEATHER / "config.yaml", ["envs.weather.hosting=local"])
    cfg.model = ModelConfig(kind="scripted", hosting="local", script="fault_helpers:weather_reply",
                            chat_template="chatml_tools")
    policy = make_policy_client(cfg.model, app_name="policy")
    return AgentServer(cfg, policy, load_tokenizer(policy.tokenizer_path(), cfg.model.chat_template))


def test_recorded_nemo_rl_request_gets_a_trainable_verify_response(server):
    request = json.loads((FIXTURES / "nemo_rl_run_request.json").read_text())
    fields = json.loads((FIXTURES / "nemo_rl_run_response_fields.json").read_text())
    with TestClient(server.app) as client:
        result = client.post("/run", json=request).json()
    for key in fields["top_level"]:
        assert key in result, key
    assert result["instance_config"]["mask_sample"] is False and result["mask_sample"] is False
    assert result["reward"] == 1.0
    assert result["reward_components"] == {"called_tool": 1.0, "condition": 1.0, "temperature": 1.0}
    assert result["episode_id"] == {"rollout_id": "0-0", "attempt": 0}
    kinds = [i["type"] for i in result["response"]["output"]]
    assert kinds == ["function_call", "function_call_output", "message"]
    trainable = [i for i in result["response"]["output"] if "generation_token_ids" in i]
    assert [i["type"] for i in trainable] == ["function_call", "message"]  # the last item of each model call
    log = nemo_rl_message_log(result)
    assert [m["role"] for m in log] == ["user", "assistant", "user", "assistant"]
    # the trainer's max_output_tokens caps each call (it was written into the row by NeMo-RL)
    assert all(len(i["generation_token_ids"]) <= 96 for i in trainable)
    assert json.loads(result["response"]["output"][0]["arguments"]) == {"city": "Paris"}


def test_54_rows_pass_contiguity_and_grouping(server, tmp_path):
    rows = tmp_path / "rows.jsonl"
    export_nemo_gym([WEATHER / "data" / "example.jsonl"], rows, agent_name="weather_gym_ray_agent")
    tasks = [json.loads(line) for line in rows.read_text().splitlines()]
    repeats = 9
    results = []
    with TestClient(server.app) as client:
        for t, task in enumerate(tasks):
            for i in range(repeats):
                body = copy.deepcopy(task) | {"_ng_task_index": t, "_ng_rollout_index": i}
                body["responses_create_params"] |= {"temperature": 1.0, "top_p": 1.0, "max_output_tokens": 96}
                results.append(client.post("/run", json=body).json())
        metrics = client.post("/aggregate_metrics", json={"verify_responses": [
            {k: r[k] for k in ("_ng_task_index", "_ng_rollout_index", "reward")} for r in results]}).json()
    assert len(results) == 54 and {r["reward"] for r in results} == {1.0}
    logs = [nemo_rl_message_log(r) for r in results]
    # grouping: contiguous blocks of `repeats` share one _ng_task_index and one first prompt (GRPO's key)
    for g in range(len(tasks)):
        block = range(g * repeats, (g + 1) * repeats)
        assert {results[k]["_ng_task_index"] for k in block} == {g}
        assert len({tuple(logs[k][0]["token_ids"]) for k in block}) == 1
    assert len({tuple(log[0]["token_ids"]) for log in logs}) == len(tasks)
    assert len({r["episode_id"]["rollout_id"] for r in results}) == 54
    assert metrics["agent_metrics"]["mean/reward"] == 1.0 and metrics["agent_metrics"]["pass@9/reward"] == 1.0


def test_failed_episode_is_masked_with_its_failure(server):
    request = json.loads((FIXTURES / "nemo_rl_run_request.json").read_text())
    request["verifier_metadata"] = {}  # weather's verifier raises KeyError: 'city'
    with TestClient(server.app) as client:
        result = client.post("/run", json=request).json()
        bad = client.post("/run", json={"input": "no row"})
    assert result["mask_sample"] is True and result["instance_config"]["mask_sample"] is True
    assert result["failure_kind"] == "verifier_error" and "KeyError" in result["failure_reason"]
    assert result["gym_ray"]["status"] == "env_error" and result["gym_ray"]["failure_stage"] == "verification"
    assert result["reward_components"] == {}
    assert bad.status_code == 400 and bad.json()["error"].startswith("run: responses_create_params")


def test_env_step_agent_episode_is_contiguous(tmp_path):
    """blackjack (an env-step game): observations between the calls, still one contiguous message log."""
    cfg = load_config(ROOT / "environments" / "blackjack" / "config.yaml",
                      ["envs.blackjack.hosting=local"])
    cfg.model = ModelConfig(kind="scripted", hosting="local", replies=["<action>hit</action>"],
                            chat_template="chatml_tools")
    policy = make_policy_client(cfg.model, app_name="policy")
    agent = AgentServer(RunConfig(model=cfg.model, envs=cfg.envs, collect=cfg.collect), policy,
                        load_tokenizer(policy.tokenizer_path(), cfg.model.chat_template))
    rows = tmp_path / "bj.jsonl"
    export_nemo_gym([ROOT / "environments" / "blackjack" / "data" / "example.jsonl"], rows)
    task = json.loads(rows.read_text().splitlines()[0])
    with TestClient(agent.app) as client:
        result = client.post("/run", json=task | {"_ng_task_index": 0, "_ng_rollout_index": 0}).json()
    log = nemo_rl_message_log(result)
    assert result["gym_ray"]["status"] == "ok" and len(log) >= 2


def test_rewritten_history_keeps_every_message_and_trains_on_the_last_segment():
    """SmolLM2's own template drops tool_calls when re-rendering (`rerender`), so the answer's prompt does
    not extend the first call's sequence: two segments. NeMo-RL gets the whole transcript, token ids on
    the last segment's call only (its log stays contiguous), and the first segment's tokens alongside."""
    cfg = load_config(WEATHER / "config.yaml", ["envs.weather.hosting=local", "envs.weather.agent.kwargs.rerender=true"])
    cfg.model = ModelConfig(kind="scripted", hosting="local", script="fault_helpers:weather_reply")
    policy = make_policy_client(cfg.model, app_name="policy")
    agent = AgentServer(cfg, policy, load_tokenizer(policy.tokenizer_path(), None))
    request = json.loads((FIXTURES / "nemo_rl_run_request.json").read_text())
    with TestClient(agent.app) as client:
        result = client.post("/run", json=request).json()
    assert result["gym_ray"]["num_segments"] == 2 and result["reward"] == 1.0
    output = result["response"]["output"]
    assert [i["type"] for i in output] == ["function_call", "function_call_output", "message"]
    assert [i["type"] for i in output if "generation_token_ids" in i] == ["message"]
    [first] = result["gym_ray"]["earlier_segments"]
    assert first["response_token_ids"] and sum(first["response_loss_mask"]) == len(first["response_token_ids"])
    log = nemo_rl_message_log(result)
    answer = output[-1]
    assert [m["role"] for m in log] == ["user", "assistant"] and log[1]["token_ids"] == answer["generation_token_ids"]
    # the answer's prompt is not the first sequence extended: that is why it is a segment of its own
    assert answer["prompt_token_ids"][:len(first["prompt_token_ids"]) + len(first["response_token_ids"])] != (
        first["prompt_token_ids"] + first["response_token_ids"])


def test_policy_base_url_plays_the_episode_over_http_token_in_token_out(serve_http_port):
    """NeMo-RL gives its agents `policy_base_url`: the agent server then calls that OpenAI endpoint (here
    gym_ray's scripted policy on Serve HTTP) with token ids, and NeMo-RL gets the endpoint's own ids."""
    from gym_ray.integrations.nemo_gym.agent_server import policy_model
    from gym_ray.models.deploy import delete_policy, deploy_policy

    replies = [{"name": "get_weather", "arguments": {"city": "Paris"}}, "It is sunny."]
    hosted = ModelConfig(kind="scripted", name="ng-policy", replies=replies, chat_template="chatml_tools")
    endpoint = deploy_policy(hosted, "ng_policy", route_prefix="/ng_policy")
    try:
        cfg = load_config(WEATHER / "config.yaml", ["envs.weather.hosting=local"])
        cfg.model = policy_model(ModelConfig(kind="scripted", chat_template="chatml_tools", replies=["unused"]),
                                 {"policy_base_url": endpoint.base_url, "policy_model_name": "ng-policy"})
        assert (cfg.model.kind, cfg.model.base_url) == ("openai", endpoint.base_url)
        policy = make_policy_client(cfg.model, app_name="unused")
        agent = AgentServer(cfg, policy, load_tokenizer(policy.tokenizer_path(), cfg.model.chat_template))
        request = json.loads((FIXTURES / "nemo_rl_run_request.json").read_text())
        with TestClient(agent.app) as client:
            result = client.post("/run", json=request).json()
    finally:
        delete_policy("ng_policy")
    assert result["gym_ray"]["status"] == "ok", result["gym_ray"]
    assert len(nemo_rl_message_log(result)) == 4 and result["response"]["model"] == "ng-policy"
    # every call's ids and logprobs are what the endpoint's engine generates for exactly that prompt
    engine = ScriptedPolicy(hosted, policy.tokenizer_path())
    calls = [i for i in result["response"]["output"] if "generation_token_ids" in i]
    for item in calls:
        gen = asyncio.run(engine.generate(item["prompt_token_ids"], SamplingConfig()))
        assert item["generation_token_ids"] == gen.token_ids and item["generation_log_probs"] == gen.logprobs
    assert engine.tokenizer.decode(calls[1]["generation_token_ids"], skip_special_tokens=True) == "It is sunny."


# Rollouts NeMo Gym 0.7.0 ships, collected with token ids by a NeMo-RL-style vLLM model server: recorded traffic
RECORDED = ["environments/hermes_math/data/example_rollouts.jsonl",
            "responses_api_agents/anyterminal_agent/data/example_rollouts_hermes.jsonl",
            "resources_servers/competitive_coding_challenges/data/example_rollouts.jsonl"]


def test_run_output_has_the_shape_of_nemo_gyms_recorded_rollouts(server):
    """NeMo Gym's own recorded rollouts with token ids pass the re-implemented NeMo-RL reading (it reads real
    traffic as NeMo-RL does), and every item of gym_ray's /run output carries the fields the recorded items of its
    type carry (`routed_experts`, MoE-only, aside)."""
    from nemo_gym_procs import nemo_venv

    from gym_ray.integrations.nemo_gym.launch import nemo_gym_root

    root = nemo_gym_root(nemo_venv("0.7"))
    fields: dict[str, set[str]] = {}
    with_ids = 0
    for path in RECORDED:
        for line in (root / path).read_text().splitlines():
            recorded = json.loads(line)
            if any(i.get("generation_token_ids") for i in recorded["response"]["output"]):
                assert nemo_rl_message_log(recorded)  # (some files carry the fields with empty lists)
                with_ids += 1
            for item in recorded["response"]["output"]:
                fields.setdefault(item["type"], set()).update(set(item) - {"routed_experts"})
    assert with_ids >= 5 and {"message", "function_call", "function_call_output"} <= set(fields)
    request = json.loads((FIXTURES / "nemo_rl_run_request.json").read_text())
    with TestClient(server.app) as client:
        ours = client.post("/run", json=request).json()
    for item in ours["response"]["output"]:
        recorded = fields[item["type"]] - ({"generation_token_ids", "generation_log_probs", "prompt_token_ids"}
                                           if "generation_token_ids" not in item else set())
        assert recorded <= set(item), (item["type"], recorded - set(item))
    assert {"responses_create_params", "response", "reward"} <= set(ours)
