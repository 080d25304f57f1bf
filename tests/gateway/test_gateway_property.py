"""Property: over random agent histories (appends, tool results, edits, truncation, system prompt and tool
list changes, retries), the gateway's segments are token-exact against the engine and their masks cover
exactly the generated tokens; appending never starts a segment, a rewrite does whenever its prompt no longer
extends the sequence."""

from __future__ import annotations

import asyncio
import json

from agent_fakes import FakeEnv, FakePolicy, Reply
from gw_helpers import assert_token_exact, episode_for
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from gym_ray.agents.base import load_tokenizer
from gym_ray.config import AgentConfig
from gym_ray.gateway import Gateway
from gym_ray.models.default_model import prepare_default_model
from gym_ray.types import Message, Task

MODEL = str(prepare_default_model())
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
APPENDS = ("user", "tools")
REWRITES = ("edit", "truncate", "system", "tools_change", "retry")

words = st.lists(st.sampled_from(["hello", " world", "\n", "  ", "é", "日本", "🙂", "{", '"', "Paris", "42", "."]),
                 min_size=1, max_size=6).map("".join)


@st.composite
def reply(draw):
    """A model turn: text, maybe Hermes tool calls; with or without eos, canonical or per-character ids."""
    text = draw(words)
    for _ in range(draw(st.integers(0, 2))):
        call = json.dumps({"name": "get_weather", "arguments": {"city": draw(words)}},
                          ensure_ascii=draw(st.booleans()))
        text += f"\n<tool_call>{call}</tool_call>"
    return Reply(text, eos=draw(st.booleans()), char_tokens=draw(st.booleans()))


@st.composite
def history(draw):
    system = draw(st.one_of(st.none(), words))
    steps = draw(st.lists(st.tuples(reply(), st.sampled_from(APPENDS + REWRITES), st.integers(0, 1000), words),
                          min_size=1, max_size=6))
    return system, draw(words), steps, draw(st.sampled_from([None, "chatml_tools"]))


def _apply(op: str, request: list[dict], echo: dict, pick: int, text: str, tools: list | None):
    """The next request's messages and tools: the last request + the echoed reply, changed by `op`."""
    if op == "retry":  # the agent asks again without keeping the reply
        return list(request), tools
    msgs = [*request, echo]
    if op == "tools" and echo.get("tool_calls"):
        return msgs + [{"role": "tool", "tool_call_id": c["id"], "content": f"{text} {i}"}
                       for i, c in enumerate(echo["tool_calls"])], tools
    if op in ("user", "tools"):
        return msgs + [{"role": "user", "content": text}], tools
    if op == "edit":
        i = pick % len(msgs)
        msgs[i] = {**msgs[i], "content": (msgs[i].get("content") or "") + "X"}
    elif op == "truncate":
        i = pick % len(msgs)
        del msgs[i]
    elif op == "system":
        if msgs and msgs[0]["role"] == "system":
            msgs[0] = {"role": "system", "content": msgs[0]["content"] + "!"}
        else:
            msgs.insert(0, {"role": "system", "content": "New rules."})
    elif op == "tools_change":
        tools = None if tools else TOOLS
    return msgs + [{"role": "user", "content": text}], tools


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=history())
# a retry sampled the same text again as other tokens (canonical, then per character); the agent's next
# request matches both recorded replies and must continue the newer one
@example(plan=(None, "hello", [(Reply("hello", eos=True, char_tokens=False), "retry", 0, "x"),
                               (Reply("hello", eos=True, char_tokens=True), "user", 0, "x"),
                               (Reply("42", eos=True, char_tokens=False), "user", 0, "x")], None))
def test_random_histories_give_exact_segments(plan):
    system, user, steps, template = plan
    chat = load_tokenizer(MODEL, template)
    policy = FakePolicy(chat, [r for r, *_ in steps])
    prompt = ([Message(role="system", content=system)] if system is not None else []) + [
        Message(role="user", content=user)]
    ep = episode_for(Task(task_id="t", env="fake", prompt=prompt), policy, chat, env=FakeEnv(),
                     config=AgentConfig(max_total_tokens=100_000), max_tokens=4096)
    session = Gateway().open(ep, "fake")
    ops: list[str] = []

    async def main():
        msgs, tools = [m.to_openai() for m in prompt], TOOLS
        for k, (_, op, pick, text) in enumerate(steps):
            resp, _, _ = await session.chat_completion({"model": "fake", "messages": msgs, "tools": tools})
            echo = {k2: v for k2, v in resp["choices"][0]["message"].items() if v is not None}
            if k < len(steps) - 1:
                ops.append(op)
                msgs, tools = _apply(op, msgs, echo, pick, text, tools)

    asyncio.run(main())
    rows = ep.rows()
    calls = policy.calls
    assert_token_exact(rows, calls)
    assert sum(sum(r.response_loss_mask) for r in rows) == sum(len(g) for _, g, _ in calls)
    # each span carries the policy version its call was sampled under (the fake bumps it per call)
    assert [v for r in rows for v in r.gen_policy_versions] == [3 + k for k in range(len(calls))]
    # which segment each call landed in, and whether its prompt extends the previous call's sequence
    seg_of = [r.segment_index for r in rows for _ in r.gen_span_starts]
    for k in range(1, len(calls)):
        prev = calls[k - 1][0] + calls[k - 1][1]
        extends = calls[k][0][: len(prev)] == prev
        if ops[k - 1] in APPENDS:
            assert extends, f"call {k} after an append ({ops[k - 1]}) re-rendered instead of extending"
        assert (seg_of[k] != seg_of[k - 1]) == (not extends)
    assert [r.status for r in rows] == ["prefix_break"] * (len(rows) - 1) + ["ok"]
    event(f"segments={len(rows)}")
    event(f"tool calls={ep.num_tool_calls > 0}")
