"""Property: over random multi-turn tool conversations, the transcript stays token-exact with both templates.

For every model call, `prompt_token_ids + response_token_ids` up to the end of that call equals exactly what
the fake engine was given plus what it generated; masks, spans and logprobs line up with the calls; and the
whole sequence decodes to the chat template's own rendering of the conversation (an independent oracle for
the deltas between calls).
"""

from __future__ import annotations

import asyncio
import functools
import json

from agent_fakes import FakeEnv, FakePolicy, Reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gym_ray.agents.base import EpisodeContext, load_tokenizer
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import AgentConfig, SamplingConfig
from gym_ray.models.default_model import prepare_default_model
from gym_ray.types import Message, Task, ToolSpec

MODEL = str(prepare_default_model())
TEMPLATES = [None, "chatml_tools"]
TOOLS = [
    ToolSpec(name="get_weather", description="Weather for a city",
             parameters={"type": "object", "properties": {"city": {"type": "string"}}}),
    ToolSpec(name="lookup", description="Look something up; Unicode ok: é ☃",
             parameters={"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}),
]

_CHAT = load_tokenizer(MODEL)


@functools.cache
def _representable(ch: str) -> bool:
    """SmolLM2's byte-level vocabulary lacks a few bytes (e.g. 0x16, 0xF1): text using them cannot be encoded
    losslessly by any means, so the text oracle below only draws characters the tokenizer can represent."""
    return _CHAT.hf.decode(_CHAT.encode(ch)) == ch


# Text a model or a tool could produce: unicode, emoji, control and whitespace runs (no surrogates).
_chars = st.characters(blacklist_categories=("Cs",)).filter(_representable)
text = st.one_of(
    st.text(_chars, max_size=30),
    st.text(st.sampled_from([" ", "\n", "\t", "\r", "\u00a0", "\u3000"]), max_size=6),
    st.lists(st.sampled_from(["hello", " world", "\n\n", "  ", "é", "日本語", "🙂", "{", '"', "</", "<|"]),
             max_size=8).map("".join),
)
reply_text = text.filter(lambda s: "<tool_call>" not in s and "<|im_" not in s)


@st.composite
def tool_call(draw):
    tool = draw(st.sampled_from(TOOLS))
    args = {"city": draw(text)} if tool.name == "get_weather" else {"q": draw(text), "n": draw(st.integers(-5, 99))}
    body = json.dumps({"name": tool.name, "arguments": args}, ensure_ascii=draw(st.booleans()))
    return tool.name, args, draw(st.sampled_from(["<tool_call>{}</tool_call>", "<tool_call>\n{}\n</tool_call>"])).format(body)


@st.composite
def conversation(draw):
    """A plan: opening chat, k tool-calling turns (each with 1-3 calls and their outputs), a final answer."""
    system = draw(st.one_of(st.none(), text))
    prompt = ([Message(role="system", content=system)] if system is not None else [])
    prompt.append(Message(role="user", content=draw(text)))
    turns = []
    for _ in range(draw(st.integers(0, 3))):
        calls = draw(st.lists(tool_call(), min_size=1, max_size=3))
        content = draw(reply_text)
        raw = content + ("\n" if content else "") + "\n".join(c[2] for c in calls)
        turns.append({
            "reply": Reply(raw, eos=draw(st.booleans()), char_tokens=draw(st.booleans())),
            "calls": [(name, args) for name, args, _ in calls],
            "outputs": [draw(text) for _ in calls],
        })
    final = Reply(draw(reply_text), eos=draw(st.booleans()), char_tokens=draw(st.booleans()))
    return prompt, turns, final


def _ctx(policy, env, chat, config: AgentConfig) -> EpisodeContext:
    return EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(max_tokens=4096),
                          config=config, rollout_id="r0", group_id="g0", rollout_index=0, group_size=1,
                          session_id="s0")


def assert_token_exact(row, policy: FakePolicy) -> None:
    """Every call's (prompt, generation) is a prefix of the row's sequence, at the span the row records."""
    row.check_invariants()
    full = row.prompt_token_ids + row.response_token_ids
    n_prompt = len(row.prompt_token_ids)
    assert len(policy.calls) == len(row.gen_span_starts) == row.num_turns
    assert policy.calls[0][0] == row.prompt_token_ids
    for k, (prompt, gen, logprobs) in enumerate(policy.calls):
        assert full[: len(prompt) + len(gen)] == prompt + gen, f"call {k}: engine sequence is not a prefix"
        start, end = row.gen_span_starts[k], row.gen_span_ends[k]
        assert (start, end) == (len(prompt) - n_prompt, len(prompt) - n_prompt + len(gen))
        assert row.response_logprobs[start:end] == logprobs
    outside = [lp for lp, m in zip(row.response_logprobs, row.response_loss_mask, strict=True) if m == 0]
    assert all(lp == 0.0 for lp in outside)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=conversation(), template=st.sampled_from(TEMPLATES))
def test_tool_calling_transcript_is_token_exact(plan, template):
    prompt, turns, final = plan
    chat = load_tokenizer(MODEL, template)
    outputs = iter([o for t in turns for o in t["outputs"]])
    env = FakeEnv(tool_specs=TOOLS, tool_output=lambda call: next(outputs))
    policy = FakePolicy(chat, [t["reply"] for t in turns] + [final])
    task = Task(task_id="t", env="fake", prompt=prompt)
    config = AgentConfig(max_turns=len(turns) + 1, max_total_tokens=100_000)
    [row] = asyncio.run(ToolCallingAgent(config).run(task, _ctx(policy, env, chat, config)))

    assert row.status == "ok", row.error
    assert not row.truncated
    assert_token_exact(row, policy)
    assert row.call_finish_reasons == ["stop"] * (len(turns) + 1)
    # Parsing saw exactly the calls the model wrote (arguments included), in order.
    assert [(e[2], e[3]) for e in env.log if e[0] == "call_tool"] == [c for t in turns for c in t["calls"]]
    # Oracle: the template's own rendering of the conversation, with each assistant turn as the raw text.
    oracle: list[dict] = [{"role": m.role, "content": m.content} for m in prompt]
    calls = iter(json.loads(row.messages_json)[len(prompt):])
    for t in turns:
        oracle.append({"role": "assistant", "content": t["reply"].text})
        next(calls)
        for out in t["outputs"]:
            m = next(calls)
            oracle.append({"role": "tool", "content": out, "tool_call_id": m["tool_call_id"]})
    oracle.append({"role": "assistant", "content": final.text})
    schemas = [t.to_openai() for t in TOOLS]
    rendered = chat.render(oracle, schemas, add_generation_prompt=False)
    decoded = chat.hf.decode(row.prompt_token_ids + row.response_token_ids, skip_special_tokens=False)
    closing = "\n" if final.eos else "<|im_end|>\n"
    assert decoded + closing == rendered


@st.composite
def step_episode(draw):
    n = draw(st.integers(1, 4))
    steps = [(draw(text), draw(st.floats(-1, 1, allow_nan=False)), False) for _ in range(n - 1)]
    steps.append((draw(text), draw(st.floats(-1, 1, allow_nan=False)), True))
    replies = [Reply(draw(reply_text), eos=draw(st.booleans()), char_tokens=draw(st.booleans())) for _ in range(n)]
    return draw(text.filter(bool)), steps, replies


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(episode=step_episode(), template=st.sampled_from(TEMPLATES))
def test_env_step_transcript_is_token_exact(episode, template):
    first_obs, steps, replies = episode
    chat = load_tokenizer(MODEL, template)
    env = FakeEnv(steps=steps, first_observation=first_obs)
    policy = FakePolicy(chat, replies)
    task = Task(task_id="t", env="step", prompt=[Message(role="system", content="Play.")])
    config = AgentConfig(cls="gym_ray.agents.env_step:EnvStepAgent", max_turns=10, max_total_tokens=100_000)
    [row] = asyncio.run(EnvStepAgent(config).run(task, _ctx(policy, env, chat, config)))

    assert row.status == "ok", row.error
    assert_token_exact(row, policy)
    assert row.turn_rewards == [r for _, r, _ in steps]
    assert abs(row.reward - sum(r for _, r, _ in steps)) < 1e-9
    assert [e[2] for e in env.log if e[0] == "step"] == [r.text.strip() for r in replies]
    oracle = [{"role": "system", "content": "Play."}, {"role": "user", "content": first_obs}]
    for (obs, _, done), reply in zip(steps, replies, strict=True):
        oracle.append({"role": "assistant", "content": reply.text})
        if not done:
            oracle.append({"role": "user", "content": obs})
    rendered = chat.render(oracle, None, add_generation_prompt=False)
    decoded = chat.hf.decode(row.prompt_token_ids + row.response_token_ids, skip_special_tokens=False)
    assert decoded + ("\n" if replies[-1].eos else "<|im_end|>\n") == rendered


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=conversation(), template=st.sampled_from(TEMPLATES))
def test_rerendered_history_splits_into_token_exact_segments(plan, template):
    """With `rerender`, each prompt is the template's rendering of the parsed messages, which often differs
    from what the model generated: every call must still land token-exact in exactly one segment."""
    prompt, turns, final = plan
    chat = load_tokenizer(MODEL, template)
    outputs = iter([o for t in turns for o in t["outputs"]])
    env = FakeEnv(tool_specs=TOOLS, tool_output=lambda call: next(outputs))
    policy = FakePolicy(chat, [t["reply"] for t in turns] + [final])
    config = AgentConfig(max_turns=len(turns) + 1, max_total_tokens=100_000, kwargs={"rerender": True})
    rows = asyncio.run(ToolCallingAgent(config).run(Task(task_id="t", env="fake", prompt=prompt),
                                                    _ctx(policy, env, chat, config)))

    assert [r.segment_index for r in rows] == list(range(len(rows)))
    assert [r.status for r in rows] == ["prefix_break"] * (len(rows) - 1) + ["ok"]
    assert len(rows) == 1 + len(json.loads(rows[-1].metrics_json)["prefix_breaks"])
    calls = iter(policy.calls)
    for row in rows:
        row.check_invariants()
        full = row.prompt_token_ids + row.response_token_ids
        for k, (start, end) in enumerate(zip(row.gen_span_starts, row.gen_span_ends, strict=True)):
            prompt_ids, gen, logprobs = next(calls)
            if k == 0:
                assert prompt_ids == row.prompt_token_ids
            n = len(row.prompt_token_ids)
            assert full[: n + end] == prompt_ids + gen and (start, end) == (len(prompt_ids) - n, len(prompt_ids) - n + len(gen))
            assert row.response_logprobs[start:end] == logprobs
    assert next(calls, None) is None
