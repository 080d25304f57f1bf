"""The gateway against oversized and invalid requests: a size cap (413) that a chunked upload cannot dodge,
big bodies handled without stalling the other sessions of the actor, and OpenAI/vLLM request validation
(400 naming the parameter) with what the run fixes reported, never silently dropped."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import openai
import pytest
from agent_fakes import FakeEnv, FakePolicy
from gw_helpers import episode_for
from openai import AsyncOpenAI

from gym_ray.agents.base import load_tokenizer
from gym_ray.config import AgentConfig
from gym_ray.gateway import get_gateway
from gym_ray.types import Message, Task

TASK = Task(task_id="t0", env="fake", prompt=[Message(role="system", content="You answer briefly."),
                                               Message(role="user", content="What is the weather in Paris?")])
MSGS = [m.to_openai() for m in TASK.prompt]


@pytest.fixture(scope="module")
def chat(default_model_path):
    return load_tokenizer(default_model_path, "chatml_tools")


def _open(gw, chat, **config):
    policy = FakePolicy(chat, ["Sunny."])
    ep = episode_for(TASK, policy, chat, env=FakeEnv(), config=AgentConfig(**config))
    return gw.open(ep, "fake"), ep, policy


def _with_text(chars: int) -> list[dict]:
    return [MSGS[0], {"role": "user", "content": "Paris? " + "lorem ipsum dolor sit amet " * (chars // 27)}]


def test_request_size_is_capped(chat):
    """Over the cap -> 413 in OpenAI's error shape, by Content-Length and for a chunked upload alike (which
    declares no length), through the official client too; nothing is recorded. Under the cap -> answered.
    The default cap holds without configuration."""

    async def main():
        gw = await get_gateway()
        s, ep, policy = _open(gw, chat, max_total_tokens=10**6, kwargs={"max_request_bytes": 65536})
        url = gw.base_url(s) + "/chat/completions"
        big = json.dumps({"model": "fake", "messages": _with_text(100_000)}).encode()

        async def chunked():
            for i in range(0, len(big), 4096):
                yield big[i:i + 4096]

        async with httpx.AsyncClient(timeout=60) as http:
            declared = await http.post(url, content=big, headers={"content-type": "application/json"})
            streamed = await http.post(url, content=chunked(), headers={"content-type": "application/json"})
            small = await http.post(url, json={"model": "fake", "messages": _with_text(30_000)})
            d, _, _ = _open(gw, chat)
            default = await http.post(gw.base_url(d) + "/chat/completions",
                                      json={"model": "fake", "messages": _with_text(9 << 20)})
        client = AsyncOpenAI(base_url=gw.base_url(s), api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as exc:
            await client.chat.completions.create(model="fake", messages=_with_text(100_000))
        return declared, streamed, small, default, exc.value, policy

    declared, streamed, small, default, exc, policy = asyncio.run(main())
    assert "content-length" not in streamed.request.headers  # the chunked upload declared no size
    for r in (declared, streamed, default):
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large"
        assert err["param"] is None and "max_request_bytes" in err["message"]
    assert str(8 << 20) in default.json()["error"]["message"]
    assert exc.status_code == 413 and exc.code == "request_too_large"  # surfaced, not a connection error
    assert small.status_code == 200, small.text
    assert len(policy.calls) == 1  # only the request under the cap reached the policy


def test_big_body_does_not_stall_other_sessions(chat, monkeypatch):
    """While one session's 1 MiB request is parsed and tokenized (~400k tokens, seconds of CPU), another
    session's GET /v1/models keeps being answered: the longest gap between its answers is a small part of
    the big request's time (the tokenizer no longer holds the event loop's GIL for all of it). The same
    body sent to an episode whose window it cannot fit is refused by its length, without tokenizing it."""
    encoded: list[int] = []
    encode = chat.encode
    monkeypatch.setattr(chat, "encode", lambda text: encoded.append(len(text)) or encode(text))

    async def main():
        gw = await get_gateway()
        s, _, policy = _open(gw, chat, max_total_tokens=10**7)
        other, _, _ = _open(gw, chat)
        body = {"model": "fake", "messages": _with_text(1 << 20), "max_tokens": 8}
        done = asyncio.Event()
        answered: list[float] = []

        async def poll(http):
            while not done.is_set():
                assert (await http.get(gw.base_url(other) + "/models")).status_code == 200
                answered.append(time.perf_counter())

        async with httpx.AsyncClient(timeout=300) as http:
            small, _, _ = _open(gw, chat)  # the default 2048-token window
            hopeless = await http.post(gw.base_url(small) + "/chat/completions", json=body)
            hopeless_encoded = list(encoded)
            poller = asyncio.create_task(poll(http))
            while not answered:  # the poller is running before the big request starts
                await asyncio.sleep(0.001)
            t0 = time.perf_counter()
            r = await http.post(gw.base_url(s) + "/chat/completions", json=body)
            t1 = time.perf_counter()
            done.set()
            await poller
        stamps = [t0, *(t for t in answered if t0 < t < t1), t1]
        gap = max(b - a for a, b in itertools.pairwise(stamps))
        return r, t1 - t0, gap, len(policy.calls[0][0]), hopeless, hopeless_encoded

    r, took, gap, prompt_len, hopeless, hopeless_encoded = asyncio.run(main())
    assert hopeless.status_code == 400 and hopeless.json()["error"]["code"] == "context_length_exceeded"
    assert max(hopeless_encoded, default=0) < 10_000, "the hopeless prompt was tokenized"
    assert r.status_code == 200, r.text
    assert prompt_len > 300_000 and took > 0.5, (prompt_len, took)  # a big job was done, not skipped
    assert gap < 0.25 * took, f"the event loop stalled {gap:.2f} s of a {took:.2f} s request"


BAD_CHAT = [  # (request fields, the parameter the 400 must name)
    ({"max_tokens": 10**9}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"seed": "7"}, "seed"),
    ({"n": 2}, "n"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 3}, "top_logprobs"),
    ({"stop": ""}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logit_bias": {"42": 500}}, "logit_bias"),
    ({"guided_json": {"type": "object"}}, "guided_json"),
    ({"tool_choice": "required"}, "tool_choice"),
]
BAD_RESPONSES = [
    ({"max_output_tokens": 10**9}, "max_output_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 2}, "top_p"),
    ({"text": {"format": {"type": "json_object"}}}, "text"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
]


def test_request_validation(chat):
    """Invalid values answer 400 with OpenAI's error shape naming the parameter, on both routes, before
    anything is generated; valid values the run fixes are answered with the run's sampling and reported in
    the answer and the row."""

    async def main():
        gw = await get_gateway()
        s, ep, policy = _open(gw, chat)
        base = gw.base_url(s)
        wrong = []
        async with httpx.AsyncClient(timeout=60) as http:
            for route, cases, base_body in (("/chat/completions", BAD_CHAT, {"messages": MSGS}),
                                            ("/responses", BAD_RESPONSES, {"input": "Weather in Paris?"})):
                for fields, param in cases:
                    r = await http.post(base + route, json={"model": "fake", **base_body, **fields})
                    err = r.json().get("error") or {}
                    if (r.status_code, err.get("param"), err.get("type")) != (400, param, "invalid_request_error"):
                        wrong.append((route, fields, r.status_code, r.text[:300]))
            rejected_calls = len(policy.calls)
            client = AsyncOpenAI(base_url=base, api_key="x", max_retries=0)
            with pytest.raises(openai.BadRequestError) as exc:
                await client.chat.completions.create(model="fake", messages=MSGS, temperature=-1)
            fixed = await client.chat.completions.create(model="fake", messages=MSGS, temperature=0.3, seed=7,
                                                         max_tokens=1000, user="me")
            shorter = await client.chat.completions.create(model="fake", messages=MSGS, max_tokens=1)
            resp = await client.responses.create(model="fake", input="Weather in Paris?", temperature=0.3)
        gw.close(s)
        return wrong, rejected_calls, exc.value, fixed, shorter, resp, policy, ep

    wrong, rejected_calls, exc, fixed, shorter, resp, policy, ep = asyncio.run(main())
    assert not wrong, "\n".join(map(str, wrong))
    assert rejected_calls == 0
    assert exc.param == "temperature" and exc.code == "decimal_below_min_value"
    run = ep.ctx.sampling
    assert [(p.temperature, p.seed, p.max_tokens) for p in policy.samplings] == [
        (run.temperature, run.seed, run.max_tokens), (run.temperature, run.seed, 1),
        (run.temperature, run.seed, run.max_tokens)]
    assert set(fixed.model_extra["ignored_params"]) == {"temperature", "seed", "max_tokens", "user"}
    assert "ignored_params" not in shorter.model_extra  # a shorter call is applied, nothing to report
    assert set(resp.model_extra["ignored_params"]) == {"temperature"}
    metrics = ep.rows()[-1].metrics_json
    assert json.loads(metrics)["ignored_params"] == {"temperature": 2, "seed": 1, "max_tokens": 1, "user": 1}
