"""The production path: ExternalAgent in the collector's Ray agent actors (the gateway in each actor's event
loop), rows written to Parquet and checked token-exactly against the engine's calls."""

from __future__ import annotations

import asyncio

import gw_helpers
import pytest
import ray
from gw_helpers import WEATHER, ActorRecordingPolicy, assert_token_exact, recorder_actor
from gym_ray_env_weather.server import forecast

from gym_ray.collect.api import Collector, load_run_tasks
from gym_ray.config import validate_config
from gym_ray.launch.deploy import deploy_all, teardown
from gym_ray.models.client import make_policy_client
from gym_ray.rundir import read_rollout_table
from gym_ray.types import rollouts_from_arrow

ray.cloudpickle.register_pickle_by_value(gw_helpers)


def _run(tmp_path, model: dict, num_repeats: int, limit: int, max_tokens: int, app: str | None = None):
    """`app`: the policy's running Serve app to use; None deploys `model` for this run."""
    cfg = validate_config({
        "model": model,
        "envs": {"weather": {
            "server": "gym_ray_env_weather.server:Weather", "hosting": "local",
            "data": [str(WEATHER / "data" / "example.jsonl")],
            "agent": {"cls": "gym_ray.gateway.agent:ExternalAgent", "max_total_tokens": 2048,
                      "kwargs": {"program": "gym_ray.gateway.examples:openai_tool_loop",
                                 "timeout_s": 240}}}},
        "collect": {"limit": limit, "num_repeats": num_repeats, "concurrency": 8, "episode_timeout_s": 300,
                    "sampling": {"temperature": 1.0, "max_tokens": max_tokens, "seed": 0}},
    })
    dep = deploy_all(cfg, http=False) if app is None else None
    apps = dep.apps if dep else {cfg.model.name: app}
    recorder = recorder_actor()
    try:
        policy = ActorRecordingPolicy(make_policy_client(cfg.model, apps[cfg.model.name]), recorder)
        with Collector(cfg, policy, apps=apps) as col:
            summary = asyncio.run(col.collect_to_dir(load_run_tasks(cfg), tmp_path, progress=False))
        calls = ray.get(recorder.dump.remote())
    finally:
        if dep:
            teardown(dep)
        ray.kill(recorder)
    return summary, rollouts_from_arrow(read_rollout_table(tmp_path)), calls


def _check(rows, calls) -> int:
    """Token-exact per rollout against the calls of its session; returns how many rollouts had calls."""
    checked = 0
    for rollout_id in {r.rollout_id for r in rows}:
        segments = sorted((r for r in rows if r.rollout_id == rollout_id), key=lambda r: r.segment_index)
        session_calls = [c for sid, cs in calls.items() if sid.startswith(rollout_id + ".") for c in cs]
        assert_token_exact(segments, session_calls)
        checked += bool(session_calls)
    return checked


def test_collector_runs_external_agents_in_actors(tmp_path, serve_http_port):
    condition, temp = forecast("Paris")
    model = {"kind": "scripted", "name": "scripted", "chat_template": "chatml_tools",
             "replies": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                         f"It is {condition} in Paris, {temp} °C."]}
    summary, rows, calls = _run(tmp_path, model, num_repeats=3, limit=1, max_tokens=64)
    assert summary["overall"]["rollouts"] == 3 and len(rows) == 3
    assert sorted(r.rollout_index for r in rows) == [0, 1, 2]
    for r in rows:
        assert r.status == "ok", r.error
        assert (r.reward, r.num_turns, r.num_tool_calls) == (1.0, 2, 1)
    assert _check(rows, calls) == 3


@pytest.mark.slow
def test_vllm_policy_through_the_gateway(tmp_path, shared_vllm):
    """The embedded vLLM policy: whatever the model writes, every row is token-exact against the engine and
    is either scored by the verifier (`ok`) or carries a failure status."""
    model, app = shared_vllm  # the default model on vLLM, chatml_tools, max_model_len 2048
    summary, rows, calls = _run(tmp_path, model, num_repeats=2, limit=2, max_tokens=48, app=app)
    assert summary["overall"]["rollouts"] == 4
    assert _check(rows, calls) >= 1
    for r in rows:
        assert r.status in ("ok", "aborted", "timeout", "prefix_break"), (r.status, r.error)
        if r.status == "ok":
            assert '"verify_info"' in r.metrics_json or r.reward_component_names
