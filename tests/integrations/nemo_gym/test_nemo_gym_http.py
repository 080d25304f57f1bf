"""The resources-server HTTP surface NeMo Gym 0.4–0.7 clients call, on a real Serve app.

The slow tests in test_nemo_gym_collector.py drive the same routes with NeMo Gym's own collector.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gym_ray_env_weather.server import forecast
from ray import serve

from gym_ray import compat
from gym_ray.config import load_config
from gym_ray.resources.serve import deploy_envs

ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def apps(serve_http_port):
    names = ("weather", "counter")
    cfgs = {name: load_config(ROOT / "environments" / name / "config.yaml").envs[name] for name in names}
    yield dict(zip(names, deploy_envs(cfgs, route_prefixes={n: f"/ng-{n}" for n in names}), strict=True))
    compat.delete_apps(list(names))


def client(port: int, name: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}/ng-{name}", timeout=30)


def live_sessions(app: str) -> int:
    return serve.get_app_handle(app).num_sessions.remote().result()


def row(city: str, **extra) -> dict:
    return {
        "responses_create_params": {"input": [{"role": "user", "content": f"weather in {city}?"}]},
        "verifier_metadata": {"city": city},
        **extra,
    }


def answer(city: str, text: str) -> dict:
    condition, temp = forecast(city)
    return {"output": [
        {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
        {"type": "function_call_output", "call_id": "c", "output": f"The weather in {city} is {condition}, {temp} °C."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]},
    ]}


def test_health_routes_and_reverify_mode(apps, serve_http_port):
    with client(serve_http_port, "weather") as w, client(serve_http_port, "counter") as c:
        for path in ("/", "/health", "/readyz"):
            assert w.get(path).json() == {"status": "ok", "env": "weather"}
        assert w.get("/reverify_mode").json() == "stateless"  # verify reads only the stored response
        assert c.get("/reverify_mode").json() == "unsupported"  # the counter's state lives in the session


def test_unknown_routes_are_404(apps, serve_http_port):
    with client(serve_http_port, "weather") as w:
        r = w.post("/aggregate_metricz", json={})
        assert r.status_code == 404 and r.json()["error"] == "no route or tool 'aggregate_metricz' (tools: get_weather)"
        assert w.get("/nothing").status_code == 404


def test_verify_ends_the_session(apps, serve_http_port):
    """NeMo Gym never calls /close_session: 100 episodes leave no session behind."""
    condition, temp = forecast("Oslo")
    with client(serve_http_port, "weather") as w:
        for _ in range(100):
            cookies = dict(w.post("/seed_session", json=row("Oslo")).cookies)
            w.cookies.clear()
            assert w.post("/get_weather", json={"city": "Oslo"}, cookies=cookies).status_code == 200
            body = {**row("Oslo"), "response": answer("Oslo", f"{condition}, {temp} degrees")}
            assert w.post("/verify", json=body, cookies=cookies).json()["reward"] == 1.0
    assert live_sessions(apps["weather"]) == 0


def test_verifier_error_is_a_500_with_a_failure_and_no_reward(apps, serve_http_port):
    with client(serve_http_port, "weather") as w:
        body = {**row("Oslo"), "verifier_metadata": {}, "response": answer("Oslo", "sunny")}
        r = w.post("/verify", json=body)
    assert r.status_code == 500
    out = r.json()
    assert "reward" not in out and out["mask_sample"] is True and out["failure_kind"] == "verifier_error"
    assert "KeyError: 'city'" in out["failure_reason"]
    assert out["failure"] == {"failure_reason": out["failure_reason"], "terminal": False,
                              "failure_kind": "verifier_error", "stage": "verification", "gym_ray_kind": "exception"}


def test_nemo_gym_07_seed_and_close_bodies(apps, serve_http_port):
    """0.7.0's Environment Server bodies: a caller-assigned session id, the row under task_data."""
    episode = {"rollout_id": "r-1", "attempt": 2}
    seed = {"resources_session_id": "rs-1", "episode_id": episode,
            "task_id": {"taskset": "counter", "task_id": "t-1"},
            "task_data": {"responses_create_params": {"input": "count"}, "initial_count": 3, "expected_count": 5}}
    with client(serve_http_port, "counter") as c:
        seeded = c.post("/seed_session", json=seed)
        assert seeded.status_code == 200 and seeded.json() == {"resources_session_id": "rs-1"}
        c.cookies.clear()
        hdr = {"X-Session-Id": "rs-1"}
        c.post("/increment", json={"count": 2}, headers=hdr)
        assert c.post("/get_value", headers=hdr).text == "5"
        closed = c.post("/close_session", json={"resources_session_id": "rs-1", "episode_id": episode})
        assert closed.status_code == 200 and closed.json() == {"resources_session_id": "rs-1"}
        assert c.post("/get_value", headers=hdr).status_code == 404
        # closing again (or a session never seeded) succeeds, as 0.7.0's contract asks
        again = c.post("/close_session", json={"resources_session_id": "rs-1", "episode_id": episode})
        assert again.json() == {"resources_session_id": "rs-1"}
        bad = c.post("/seed_session", json={**seed, "task_data": "x"})
        assert bad.status_code == 400 and "task_data" in bad.json()["error"]


def test_aggregate_metrics(apps, serve_http_port):
    rows = [{"_ng_task_index": t, "_ng_rollout_index": i, "reward": float(t == 0 or i == 0)}
            for t in range(2) for i in range(2)]
    with client(serve_http_port, "weather") as w:
        out = w.post("/aggregate_metrics", json={"verify_responses": rows}).json()
        assert w.post("/aggregate_metrics", json={"verify_responses": 3}).status_code == 400
    assert out["agent_metrics"]["mean/reward"] == 0.75 and out["agent_metrics"]["num_rollouts"] == 4
    assert out["agent_metrics"]["pass@1/reward"] == 0.75 and out["agent_metrics"]["pass@2/reward"] == 1.0
    assert out["key_metrics"] == {"mean/reward": 0.75, "pass@1/reward": 0.75}
    assert [g["mean/reward"] for g in out["group_level_metrics"]] == [1.0, 0.5]


def test_nemo_gym_07_typed_verify_body(apps, serve_http_port):
    """0.7.0's `ResourcesVerifyRequest`: `{episode_id, task_id, verification_input}`, the row and the
    episode's response inside the input; the answer names the episode, not the whole row."""
    episode = {"rollout_id": "r-2", "attempt": 0}
    task_id = {"taskset": "weather", "task_id": "t-2"}
    seed = {"resources_session_id": "rs-2", "episode_id": episode, "task_id": task_id, "task_data": row("Paris")}
    condition, temp = forecast("Paris")
    text = f"It is {condition}, {temp} °C."
    with client(serve_http_port, "weather") as c:
        assert c.post("/seed_session", json=seed).status_code == 200
        body = {"episode_id": episode, "task_id": task_id,
                "verification_input": {"resolved_row": row("Paris"), "response": answer("Paris", text)}}
        verified = c.post("/verify", json=body, headers={"X-Session-Id": "rs-2"})
        assert verified.status_code == 200, verified.text
        out = verified.json()
        assert out["episode_id"] == episode and out["task_id"] == task_id and "verification_input" not in out
        assert out["reward"] == 1.0
        # the row's own fields inside the input work too; an input that is not an object is a 400
        flat = {**body, "verification_input": {**row("Paris"), "response": answer("Paris", "no idea")}}
        assert c.post("/verify", json=flat).json()["reward"] < 1.0
        bad = c.post("/verify", json={**body, "verification_input": "x"})
        assert bad.status_code == 400 and "verification_input" in bad.json()["error"]
