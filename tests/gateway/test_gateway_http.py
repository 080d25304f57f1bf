"""The gateway over real HTTP: errors, streaming, history rewrites and concurrent calls in one session."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from gw_helpers import RecordingPolicy, assert_token_exact, episode_for
from openai import AsyncOpenAI

from gym_ray.agents.base import load_tokenizer
from gym_ray.config import ModelConfig
from gym_ray.gateway import get_gateway
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.tasks import load_tasks
from gym_ray.types import Task


@pytest.fixture(scope="module")
def parts(default_model_path):
    chat = load_tokenizer(default_model_path, "chatml_tools")
    scripted = ScriptedPolicy(ModelConfig(kind="scripted", name="scripted",
                                          script="gw_helpers:weather_script"), default_model_path)
    from gw_helpers import WEATHER

    task = load_tasks([str(WEATHER / "data" / "example.jsonl")], default_env="weather")[0]
    return chat, scripted, default_model_path, task


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def _msgs(task: Task) -> list[dict]:
    return [m.to_openai() for m in task.prompt]


def test_errors_unknown_and_ended_sessions(parts):
    chat, scripted, path, task = parts

    async def main():
        gw = await get_gateway()
        ep = episode_for(task, RecordingPolicy(scripted, path), chat)
        await ep.ctx.env.seed_session(ep.ctx.session_id, task)
        s = gw.open(ep, "scripted")
        base = gw.base_url(s)
        async with httpx.AsyncClient(timeout=30) as http:
            unknown = await http.post(base.replace(s.id, "nope") + "/chat/completions",
                                      json={"model": "scripted", "messages": _msgs(task)})
            bad = await http.post(base + "/chat/completions", content=b"{not json")
            empty = await http.post(base + "/chat/completions", json={"model": "scripted", "messages": []})
            ok = await http.post(base + "/chat/completions", json={"model": "scripted", "messages": _msgs(task)})
            models = await http.get(base + "/models")
            tools_url = base.removesuffix("/v1") + "/tools"
            tools = await http.get(tools_url)
            no_tool = await http.post(tools_url + "/nope", json={})
            tool = await http.post(tools_url + "/get_weather", json={"city": "Oslo"})
            gw.close(s)
            ended = await http.post(base + "/chat/completions", json={"model": "scripted", "messages": _msgs(task)})
        client = AsyncOpenAI(base_url=base, api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as exc:  # the official client surfaces it, unretried
            await client.chat.completions.create(model="scripted", messages=_msgs(task))
        return unknown, bad, empty, ok, models, ended, exc.value, ep, (tools, no_tool, tool)

    unknown, bad, empty, ok, models, ended, exc, ep, (tools, no_tool, tool) = asyncio.run(main())
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "session_not_found"
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    assert empty.status_code == 400
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert models.json()["data"][0]["id"] == "scripted"
    assert ended.status_code == 410 and ended.json()["error"]["code"] == "session_ended"
    assert exc.status_code == 410
    assert ep.transcript.num_calls == 1  # only the accepted call was recorded
    assert [t["function"]["name"] for t in tools.json()] == ["get_weather"]
    assert no_tool.status_code == 404 and "get_weather" in no_tool.json()["error"]["message"]
    assert tool.json()["output"].startswith("The weather in Oslo is "), tool.json()


def test_streaming_matches_non_streaming(parts):
    """The SSE stream assembles (by the official client's chunk types) into the same answer."""
    chat, scripted, path, task = parts

    async def main():
        gw = await get_gateway()
        answers = []
        for stream in (False, True):
            policy = RecordingPolicy(scripted, path)
            s = gw.open(episode_for(task, policy, chat), "scripted")
            client = AsyncOpenAI(base_url=gw.base_url(s), api_key="x", max_retries=0)
            if not stream:
                r = await client.chat.completions.create(model="scripted", messages=_msgs(task), tools=TOOLS,
                                                         logprobs=True)
                m = r.choices[0]
                answers.append((m.message.content, [(c.id, c.function.name, c.function.arguments)
                                                    for c in m.message.tool_calls], m.finish_reason, None))
                continue
            chunks = [c async for c in await client.chat.completions.create(
                model="scripted", messages=_msgs(task), tools=TOOLS, stream=True,
                stream_options={"include_usage": True})]
            calls = [(t.id, t.function.name, t.function.arguments)
                     for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
            finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) or None
            answers.append((content, calls, finish, chunks[-1].usage))
            gw.close(s)
        return answers

    (c0, calls0, f0, _), (c1, calls1, f1, usage) = asyncio.run(main())
    assert (c0, calls0, f0) == (c1, calls1, f1)
    assert f0 == "tool_calls" and calls0[0][1:] == ("get_weather", '{"city": "Paris"}')
    assert usage is not None and usage.completion_tokens > 0


def test_rewritten_history_starts_a_new_segment(parts):
    """Appends keep one segment; a truncated history (an agent compacting its context) starts a new one;
    every segment stays token-exact against the engine's calls."""
    chat, scripted, path, task = parts

    async def main():
        gw = await get_gateway()
        policy = RecordingPolicy(scripted, path)
        ep = episode_for(task, policy, chat)
        s = gw.open(ep, "scripted")
        client = AsyncOpenAI(base_url=gw.base_url(s), api_key="x", max_retries=0)
        msgs = _msgs(task)
        r = await client.chat.completions.create(model="scripted", messages=msgs, tools=TOOLS)
        call = r.choices[0].message.tool_calls[0]
        msgs += [r.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "The weather in Paris is sunny, 20 °C."}]
        await client.chat.completions.create(model="scripted", messages=msgs, tools=TOOLS)  # extends: same segment
        compacted = [msgs[0], {"role": "user", "content": "Paris: The weather in Paris is sunny, 20 °C. Answer."}]
        await client.chat.completions.create(model="scripted", messages=compacted, tools=TOOLS)
        gw.close(s)
        return ep.rows(), policy.calls

    rows, calls = asyncio.run(main())
    assert [len(r.gen_span_starts) for r in rows] == [2, 1]
    assert [r.status for r in rows] == ["prefix_break", "ok"]
    assert_token_exact(rows, calls)


def test_concurrent_calls_in_one_session(parts):
    """Parallel calls all answer; each is recorded once, token-exactly (branches become segments)."""
    chat, scripted, path, task = parts

    async def main():
        gw = await get_gateway()
        policy = RecordingPolicy(scripted, path)
        ep = episode_for(task, policy, chat)
        s = gw.open(ep, "scripted")
        client = AsyncOpenAI(base_url=gw.base_url(s), api_key="x", max_retries=0)
        variants = [[*_msgs(task)[:1], {"role": "user", "content": f"What's the weather in {c}?"}]
                    for c in ("Paris", "Oslo", "Rome", "Lima", "Kyiv", "Bern")]
        answers = await asyncio.gather(*(client.chat.completions.create(model="scripted", messages=m, tools=TOOLS)
                                         for m in variants))
        gw.close(s)
        return ep.rows(), policy.calls, answers

    rows, calls, answers = asyncio.run(main())
    cities = sorted(json.loads(a.choices[0].message.tool_calls[0].function.arguments)["city"] for a in answers)
    assert cities == ["Bern", "Kyiv", "Lima", "Oslo", "Paris", "Rome"]
    assert sum(len(r.gen_span_starts) for r in rows) == len(calls) == 6
    # recording order is completion order: line the engine calls up with the spans they fill
    order = {tuple(c[1]): c for c in calls}
    spans = [order[tuple(r.response_token_ids[s:e])] for r in rows for s, e in
             zip(r.gen_span_starts, r.gen_span_ends, strict=True)]
    assert_token_exact(rows, spans)


def test_interleaved_conversations_keep_the_exact_ids(parts):
    """Two conversations alternating in one session (an orchestrator's sub-agents): each call that
    continues a conversation gets that conversation's recorded ids, never a re-rendering, even where the
    model's ids are not what tokenizing its text gives (one token per character here)."""
    from agent_fakes import FakeEnv, FakePolicy, Reply

    chat, _, _, task = parts
    policy = FakePolicy(chat, [Reply(f"Answer {k}: ok.", char_tokens=True) for k in range(4)])

    async def main():
        gw = await get_gateway()
        ep = episode_for(task, policy, chat, env=FakeEnv())
        s = gw.open(ep, "fake")
        client = AsyncOpenAI(base_url=gw.base_url(s), api_key="x", max_retries=0)
        convs = {c: [{"role": "user", "content": f"Tell me about {c}."}] for c in ("A", "B")}
        for turn in range(2):
            for c in ("A", "B"):
                r = await client.chat.completions.create(model="fake", messages=convs[c])
                convs[c] += [{"role": "assistant", "content": r.choices[0].message.content},
                             {"role": "user", "content": f"And more ({turn})?"}]
        gw.close(s)
        return ep.rows()

    rows = asyncio.run(main())
    (a1p, a1g, _), (b1p, b1g, _), (a2p, _, _), (b2p, _, _) = policy.calls
    assert a2p[: len(a1p) + len(a1g)] == a1p + a1g and b2p[: len(b1p) + len(b1g)] == b1p + b1g
    assert a1g != chat.encode(chat.decode(a1g)) + [chat.eos_token_id]  # non-canonical: re-rendering differs
    assert [len(r.gen_span_starts) for r in rows] == [1, 1, 1, 1]
    assert_token_exact(rows, policy.calls)
