"""The bridge env's failure handling and session cookies, against a small server speaking NeMo Gym's
agent protocol. Support for NeMo Gym itself is shown by the slow test in test_nemo_gym_collector.py
(NeMo Gym's own resources servers); this checks who is blamed when such a server misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ports import free_port

from gym_ray.config import EnvConfig
from gym_ray.integrations.nemo_gym.bridge import BridgeConfigError, NemoGymResources, resolve_url
from gym_ray.resources.runtime import EnvError, EnvRuntime
from gym_ray.tasks import parse_row
from gym_ray.types import Message, ToolCall

BRIDGE = "gym_ray.integrations.nemo_gym.bridge:NemoGymResources"


def nemo_like_app() -> FastAPI:
    """Cookie sessions like NeMo Gym's SessionMiddleware; a verdict chosen by the row's `mode`."""
    app = FastAPI()
    seen: dict[str, list[str]] = {}

    @app.post("/seed_session")
    async def seed(request: Request):  # like NeMo Gym's middleware: a cookie that comes in keeps its session
        sid = request.cookies.get("session") or f"s{len(seen)}"
        seen.setdefault(sid, [])
        response = JSONResponse({})
        response.set_cookie("session", sid)
        return response

    @app.post("/note")
    async def note(request: Request, body: dict):
        sid = request.cookies.get("session")
        if sid not in seen:
            return JSONResponse({"detail": "no session"}, status_code=422)
        seen[sid].append(body["text"])
        return {"notes": seen[sid]}

    @app.post("/boom")
    async def boom():
        return JSONResponse({"detail": "Internal Server Error"}, status_code=500)

    @app.post("/verify")
    async def verify(request: Request, body: dict):
        mode = body["mode"]
        if mode == "raise":
            return JSONResponse({"detail": "KeyError: 'city'"}, status_code=500)
        if mode == "mask":
            return {**body, "reward": 0.0, "mask_sample": True, "failure_kind": "judge_unavailable",
                    "failure_reason": "judge timed out"}
        calls = [i["name"] for i in body["response"]["output"] if i["type"] == "function_call"]
        notes = seen.get(request.cookies.get("session"), [])
        return {**body, "reward": float(notes == ["a", "b"]), "reward_components": {"notes": len(notes) / 2},
                "called": ",".join(calls)}

    return app


@contextlib.contextmanager
def running(app: FastAPI):
    """`app` served by uvicorn on a free port in a thread; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def url():
    with running(nemo_like_app()) as url:
        yield url


def task(mode: str):
    return parse_row({"responses_create_params": {"input": "take two notes", "tools": [
        {"type": "function", "name": "note", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
        {"type": "function", "name": "boom", "parameters": {"type": "object", "properties": {}}}]},
        "mode": mode}, default_env="bridge", default_id="0")


def episode(url: str, mode: str, calls: list[tuple[str, dict]]):
    """Seed, call the tools, verify: what the bridge answers at each step."""
    async def run():
        env = EnvRuntime(NemoGymResources(url=url), "bridge")
        t = task(mode)
        await env.seed_session("e1", t)
        outs = [await env.call_tool("e1", ToolCall(id=f"c{i}", name=n, arguments=a)) for i, (n, a) in enumerate(calls)]
        messages = [*t.prompt, Message(role="assistant", content="", tool_calls=[
            ToolCall(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)]),
            *[Message(role="tool", content=o, tool_call_id=f"c{i}") for i, o in enumerate(outs)],
            Message(role="assistant", content="done")]
        return outs, await env.verify("e1", t, messages)
    return asyncio.run(run())


def test_tools_and_verify_share_the_servers_cookie_session(url):
    outs, result = episode(url, "ok", [("note", {"text": "a"}), ("note", {"text": "b"})])
    assert outs[-1] == '{"notes":["a","b"]}'
    assert result.error is None and result.reward == 1.0 and result.components == {"notes": 1.0}
    assert result.info == {"called": "note,note"}  # the server's own extra fields, not the echoed row


def test_a_server_error_in_a_tool_is_the_envs_failure_not_text_for_the_model(url):
    async def run():
        env = EnvRuntime(NemoGymResources(url=url), "bridge")
        await env.seed_session("e1", task("ok"))
        with pytest.raises(EnvError, match="tool boom: HTTP 500"):
            await env.call_tool("e1", ToolCall(name="boom"))
        # a call the server rejects (here: unknown to it, 404) is the model's mistake, shown to it
        assert (await env.call_tool("e1", ToolCall(name="nope"))).startswith("Error: nope: HTTP 404")
        assert (await env.call_tool_raw("e1", "note", "{bad json")).startswith("Error: invalid arguments for note")
    asyncio.run(run())


@pytest.mark.parametrize(("mode", "reason"), [("raise", "HTTP 500"), ("mask", "masked the sample")])
def test_a_failing_or_masking_verifier_is_a_verify_error_never_a_reward(url, mode, reason):
    _, result = episode(url, mode, [("note", {"text": "a"})])
    assert result.error is not None and reason in result.error


def test_an_unreachable_server_fails_the_seed_as_an_env_error():
    async def run():
        env = EnvRuntime(NemoGymResources(url=f"http://127.0.0.1:{free_port()}"), "bridge")
        with pytest.raises(EnvError, match="seed failed"):
            await env.seed_session("e1", task("ok"))
    asyncio.run(run())


def test_config_errors_name_the_option():
    with pytest.raises(BridgeConfigError, match="either url"):
        NemoGymResources()
    with pytest.raises(BridgeConfigError, match="config.server"):
        NemoGymResources(head_server="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="envs.bridge.config"):
        EnvRuntime.from_config("bridge", EnvConfig(server=BRIDGE, config={"url": "http://x", "bogus": 1}))


def test_head_server_resolution_names_the_servers_it_has():
    app = FastAPI()
    app.get("/global_config_dict_yaml")(lambda: "counter:\n  resources_servers:\n    c: {host: 127.0.0.1, port: 1}\n")
    with running(app) as head:
        assert resolve_url(head, "counter") == "http://127.0.0.1:1"
        with pytest.raises(BridgeConfigError, match="'weather' is not a resources server .* counter"):
            resolve_url(head, "weather")


def test_concurrent_episodes_never_share_the_servers_session(url):
    """httpx keeps a client-wide cookie jar by default; the bridge must not, or episodes swap sessions."""
    async def run():
        env = EnvRuntime(NemoGymResources(url=url), "bridge")

        for i in range(20):  # one after the other: each seed follows answers that set another session's cookie
            await env.seed_session(f"e{i}", task("ok"))
        return await asyncio.gather(*(env.call_tool(f"e{i}", ToolCall(name="note", arguments={"text": str(i)}))
                                      for i in range(20)))
    assert asyncio.run(run()) == [f'{{"notes":["{i}"]}}' for i in range(20)]
