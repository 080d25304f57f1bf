"""The `openai` kind against a real local HTTP server that this test controls (429s, 5xx, stalls, 4xx)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ports import free_port

from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.models.client import make_policy_client
from gym_ray.models.external import OpenAIPolicyClient, PolicyError, PolicyHTTPError, PolicyTimeoutError
from gym_ray.types import Message

KEY = "sk-test-secret-123"


class Upstream:
    """A tiny OpenAI-shaped server; `plan` lists what the next requests get: "ok", "429", "503", "400", "stall",
    "echo401" (a 401 whose body repeats the Authorization header)."""

    def __init__(self):
        self.plan: list[str] = []
        self.requests: list[dict] = []
        self.delay_s = 0.0
        self.inflight = self.max_inflight = 0
        self.app = FastAPI()
        self.app.post("/v1/completions")(self.completions)
        self.app.post("/v1/chat/completions")(self.chat)

    async def _gate(self, request: Request) -> JSONResponse | None:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("authorization")})
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "stall":
            await asyncio.sleep(3)
        if step == "echo401":  # an endpoint that echoes the credential it was sent
            return JSONResponse(status_code=401, content={"error": {
                "message": f"invalid key: {request.headers.get('authorization')}", "type": "auth"}})
        if step in ("429", "503", "400"):
            headers = {"retry-after": "0"} if step == "429" else {}
            return JSONResponse(status_code=int(step), headers=headers,
                                content={"error": {"message": f"planned {step}", "type": "x"}})
        return None

    async def completions(self, request: Request):
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay_s)
            return await self._complete(request)
        finally:
            self.inflight -= 1

    async def _complete(self, request: Request):
        if (resp := await self._gate(request)) is not None:
            return resp
        body = self.requests[-1]["body"]
        n = min(body["max_tokens"], 3)
        return {"model": body["model"], "policy_version": 7, "choices": [{
            "index": 0, "text": "abc"[:n], "finish_reason": "length" if n < 3 else "stop",
            "token_ids": [10, 11, 2][:n], "prompt_token_ids": body["prompt"],
            "logprobs": {"token_logprobs": [-0.5, -0.25, -0.125][:n], "tokens": list("abc"[:n])}}]}

    async def chat(self, request: Request):
        if (resp := await self._gate(request)) is not None:
            return resp
        return {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}}]}


@pytest.fixture(scope="module")
def upstream():
    up = Upstream()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(up.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    up.base_url = f"http://127.0.0.1:{port}/v1"
    yield up
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(upstream, monkeypatch) -> OpenAIPolicyClient:
    monkeypatch.setenv("TEST_POLICY_KEY", KEY)
    upstream.plan.clear()
    upstream.requests.clear()
    cfg = ModelConfig(kind="openai", base_url=upstream.base_url, model="up-model", api_key_env="TEST_POLICY_KEY",
                      timeout_s=1.0, max_retries=2)
    c = make_policy_client(cfg, "unused")
    assert isinstance(c, OpenAIPolicyClient)
    return c


def test_generate_sends_token_ids_and_the_key(client, upstream):
    gen = asyncio.run(client.generate([1, 2, 3], SamplingConfig(max_tokens=8, temperature=0.0, top_k=5)))
    assert gen.token_ids == [10, 11, 2] and gen.logprobs == [-0.5, -0.25, -0.125]
    assert gen.finish_reason == "stop" and gen.model == "up-model" and gen.policy_version == 7
    sent = upstream.requests[-1]
    assert sent["auth"] == f"Bearer {KEY}"
    assert sent["body"]["prompt"] == [1, 2, 3] and sent["body"]["return_token_ids"] is True
    assert sent["body"]["top_k"] == 5 and sent["body"]["model"] == "up-model"
    assert KEY not in repr(client) and KEY not in str(client.__getstate__())


def test_429_then_success_is_retried(client, upstream):
    upstream.plan[:] = ["429", "503", "ok"]
    gen = asyncio.run(client.generate([1], SamplingConfig(max_tokens=2)))
    assert gen.finish_reason == "length" and gen.token_ids == [10, 11]
    assert len(upstream.requests) == 3


def test_retries_run_out_with_a_clear_error(client, upstream):
    upstream.plan[:] = ["429"] * 3
    with pytest.raises(PolicyError, match=r"HTTP 429: planned 429 \(gave up after 3 attempts\)"):
        asyncio.run(client.generate([1], SamplingConfig()))


def test_4xx_fails_at_once(client, upstream):
    upstream.plan[:] = ["400"]
    with pytest.raises(PolicyHTTPError, match="HTTP 400: planned 400") as info:
        asyncio.run(client.chat([Message(role="user", content="x")], None, SamplingConfig()))
    assert info.value.status == 400 and len(upstream.requests) == 1


def test_timeout_then_success_and_timeout_for_good(client, upstream):
    upstream.plan[:] = ["stall", "ok"]
    assert asyncio.run(client.generate([1], SamplingConfig())).token_ids == [10, 11, 2]
    upstream.plan[:] = ["stall"] * 3
    start = time.monotonic()
    with pytest.raises(PolicyTimeoutError, match=r"no answer within model.timeout_s=1.0s"):
        asyncio.run(client.generate([1], SamplingConfig()))
    assert time.monotonic() - start < 8


def test_concurrency_cap_holds(upstream):
    cfg = ModelConfig(kind="openai", base_url=upstream.base_url, max_concurrency=2, timeout_s=10)
    c = OpenAIPolicyClient(cfg, "unused")
    upstream.plan[:] = []
    while upstream.inflight:  # stalled requests of earlier tests still sleeping server-side
        time.sleep(0.05)
    upstream.delay_s, upstream.max_inflight = 0.05, 0

    async def many():
        return await asyncio.gather(*(c.generate([1], SamplingConfig()) for _ in range(10)))

    try:
        assert len(asyncio.run(many())) == 10
    finally:
        upstream.delay_s = 0.0
    assert upstream.max_inflight == 2


def test_missing_key_variable_is_named(upstream):
    cfg = ModelConfig(kind="openai", base_url=upstream.base_url, api_key_env="GYM_RAY_UNSET_KEY_VAR")
    with pytest.raises(PolicyError, match="GYM_RAY_UNSET_KEY_VAR is not set"):
        asyncio.run(OpenAIPolicyClient(cfg, "unused").generate([1], SamplingConfig()))
