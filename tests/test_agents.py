"""ToolCallingAgent and EnvStepAgent against in-process fakes: outcomes, limits, failures as rows."""

from __future__ import annotations

import asyncio
import json

import pytest
import ray.exceptions
from agent_fakes import FakeEnv, FakePolicy, Reply
from test_transcript_property import assert_token_exact

from gym_ray.agents.base import Agent, EpisodeContext, InfraError, load_tokenizer
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import AgentConfig, SamplingConfig
from gym_ray.errors import FailureStage, Status
from gym_ray.resources.runtime import SeedError
from gym_ray.types import Message, Task, ToolSpec, rollouts_from_arrow, rollouts_to_arrow

CALL = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{}"}}}}\n</tool_call>'
TASK = Task(task_id="t1", env="weather", prompt=[Message(role="user", content="Weather in Paris?")],
            verifier_metadata={"answer": "sunny"})


@pytest.fixture(scope="module")
def chat(default_model_path):
    return load_tokenizer(default_model_path, "chatml_tools")


def run(agent_cls, policy, env, chat, task=TASK, sampling=None, **config):
    cfg = AgentConfig(**config)
    ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=sampling or SamplingConfig(),
                         config=cfg, rollout_id="g1-0", group_id="g1", rollout_index=0, group_size=2,
                         session_id="g1-0.0")
    return asyncio.run(agent_cls(cfg).run(task, ctx))


def messages(row) -> list[dict]:
    return json.loads(row.messages_json)


def test_agents_satisfy_the_protocol():
    assert isinstance(ToolCallingAgent(AgentConfig()), Agent)
    assert isinstance(EnvStepAgent(AgentConfig()), Agent)


def test_an_unknown_or_bad_option_fails_naming_it_and_the_agent():
    with pytest.raises(ValueError, match=r"^EnvStepAgent: unknown option 'verfy' \(its options: max_context_len, "
                                         r"verify\)$"):
        EnvStepAgent(AgentConfig(kwargs={"verfy": True}))
    with pytest.raises(ValueError, match=r"^ToolCallingAgent: option 'max_context_len': .*greater than 0 \(got 0\)$"):
        ToolCallingAgent(AgentConfig(kwargs={"max_context_len": 0}))
    assert ToolCallingAgent(AgentConfig(kwargs={"rerender": True, "cache_tools": False})).rerender


def test_tool_round_trip_then_answer(chat):
    policy = FakePolicy(chat, ["Let me check.\n" + CALL.format("Paris"), "It is sunny in Paris."])
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat)
    assert (row.status, row.reward, row.num_turns, row.num_tool_calls, row.truncated) == ("ok", 1.0, 2, 1, False)
    assert_token_exact(row, policy)
    assert [e[0] for e in env.log] == ["seed_session", "tools", "call_tool", "verify", "close_session"]
    assert all(e[1] == "g1-0.0" for e in env.log if len(e) > 1)
    assert policy.session_ids == ["g1-0.0", "g1-0.0"]
    msgs = messages(row)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1]["content"] == "Let me check."
    assert json.loads(msgs[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert msgs[2] == {"role": "tool", "content": "Paris: sunny, 21 C", "tool_call_id": "call_0_0",
                       "name": "get_weather"}
    assert (row.reward_component_names, row.reward_component_values) == (["correct"], [1.0])
    assert (row.model, row.policy_version, row.tokenizer_fingerprint) == ("fake-model", 3, chat.fingerprint)
    assert json.loads(row.sampling_params_json)["max_tokens"] == 256
    assert Task.model_validate_json(row.task_json) == TASK
    assert json.loads(row.prompt_messages_json) == [{"role": "user", "content": "Weather in Paris?"}]
    metrics = json.loads(row.metrics_json)
    assert metrics["stop_reason"] == "final_answer" and metrics["num_calls"] == 2
    assert {"generate_s", "tool_s", "verify_s", "total_s"} <= metrics.keys()
    assert (metrics["policy_version_min"], metrics["policy_version_max"]) == (3, 4)
    assert rollouts_from_arrow(rollouts_to_arrow([row]))[0].response_token_ids == row.response_token_ids


def test_task_tools_override_env_tools(chat):
    only = [ToolSpec(name="lookup", description="Look up")]
    policy = FakePolicy(chat, [CALL.format("Paris"), "done"])
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat, task=TASK.model_copy(update={"tools": only}))
    assert ("tools",) not in env.log
    assert "lookup" in chat.hf.decode(row.prompt_token_ids) and "get_weather" not in chat.hf.decode(row.prompt_token_ids)
    # get_weather was not offered: the model is told so, the env is not called.
    assert not [e for e in env.log if e[0] == "call_tool"]
    tool_msg = messages(row)[2]
    assert tool_msg["role"] == "tool" and "unknown tool 'get_weather'" in tool_msg["content"]
    assert row.num_tool_calls == 0 and row.status == "ok"


def test_unparseable_call_goes_back_as_error_and_tokens_stay(chat):
    bad = 'Trying.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>'
    policy = FakePolicy(chat, [Reply(bad, char_tokens=True), "It is sunny."])
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat)
    assert row.status == "ok" and row.num_turns == 2 and row.num_tool_calls == 0
    assert_token_exact(row, policy)
    # The stored generation is the engine's (non-canonical) ids, not a re-tokenization of the text.
    s, e = row.gen_span_starts[0], row.gen_span_ends[0]
    assert row.response_token_ids[s:e] == policy.calls[0][1] != chat.encode(bad) + [chat.eos_token_id]
    error = messages(row)[2]
    assert error["role"] == "user" and "could not be parsed" in error["content"] and "<tool_call>" in error["content"]
    assert error["content"] in chat.hf.decode(policy.calls[1][0])  # the model saw it


def test_max_turns_truncates(chat):
    policy = FakePolicy(chat, lambda i: CALL.format(f"city{i}"))
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat, max_turns=3)
    assert (row.num_turns, row.num_tool_calls, row.truncated, row.status) == (3, 3, True, "ok")
    assert json.loads(row.metrics_json)["stop_reason"] == "max_turns"
    assert_token_exact(row, policy)
    assert row.response_loss_mask[-1] == 1  # the last tool results were not appended after the last call
    assert messages(row)[-1]["role"] == "tool"
    assert row.reward == 0.0 and ("verify" in [e[0] for e in env.log])


def test_token_budget_caps_max_tokens_and_truncates(chat):
    policy = FakePolicy(chat, lambda i: "word " * 20 + CALL.format("Paris"))
    env = FakeEnv()
    prompt_len = len(chat.prompt_ids(TASK.prompt, [t.to_openai() for t in env.tool_specs]))
    budget = prompt_len + 100
    [row] = run(ToolCallingAgent, policy, env, chat, max_total_tokens=budget, sampling=SamplingConfig(max_tokens=64))
    assert row.truncated and row.status == "ok"
    assert len(row.prompt_token_ids) + len(row.response_token_ids) <= budget
    assert policy.samplings[0].max_tokens == 64
    assert policy.samplings[-1].max_tokens == budget - len(policy.calls[-1][0]) < 64
    assert row.call_finish_reasons[-1] == "length"
    assert json.loads(row.metrics_json)["stop_reason"] == "token_budget"
    assert_token_exact(row, policy)


def test_context_limit_from_kwargs(chat):
    policy = FakePolicy(chat, ["short answer"])
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat, max_total_tokens=10_000, kwargs={"max_context_len": 50})
    # Never an `ok` row with no response scored 0: a failed admission, masked, the policy never called.
    assert (row.status, row.mask_sample, row.failure_stage, row.failure_kind) == (
        "model_error", True, "admission", "prompt_too_long")
    assert row.failure_delivery == "not_sent" and "context limit 50" in row.error
    assert row.num_turns == 0 and not row.response_token_ids and not policy.calls


def test_prefix_break_starts_a_new_segment(default_model_path):
    """SmolLM2's own template drops tool_calls when re-rendering history, so with `rerender` the second
    prompt no longer extends the first sequence: two segments, each token-exact, sharing the rollout."""
    chat = load_tokenizer(default_model_path)
    policy = FakePolicy(chat, ["Checking.\n" + CALL.format("Paris"), "It is sunny."])
    env = FakeEnv()
    rows = run(ToolCallingAgent, policy, env, chat, kwargs={"rerender": True})
    assert [(r.segment_index, r.num_segments, r.status) for r in rows] == [(0, 2, "prefix_break"), (1, 2, "ok")]
    assert {r.rollout_id for r in rows} == {"g1-0"} and [r.reward for r in rows] == [1.0, 1.0]
    first, second = rows
    assert first.mask_sample and not second.mask_sample and "history rewritten" in first.error
    for r in rows:
        r.check_invariants()
    p0, g0, _ = policy.calls[0]
    p1, g1, _ = policy.calls[1]
    assert first.prompt_token_ids + first.response_token_ids == p0 + g0
    assert second.prompt_token_ids == p1 and second.response_token_ids == g1
    assert (first.gen_span_starts, second.gen_span_starts) == ([0], [0])
    assert json.loads(second.metrics_json)["prefix_breaks"] == [1]


def test_rerender_with_template_shaped_output_stays_one_segment(chat):
    policy = FakePolicy(chat, [CALL.format("Paris"), "It is sunny."])
    rows = run(ToolCallingAgent, policy, FakeEnv(), chat, kwargs={"rerender": True})
    assert len(rows) == 1 and rows[0].status == "ok"
    assert_token_exact(rows[0], policy)


def test_policy_error_is_a_model_error_row_with_partial_tokens(chat):
    policy = FakePolicy(chat, [CALL.format("Paris"), Reply("", raise_error=ValueError("engine said no"))])
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat)
    assert row.status == Status.MODEL_ERROR and row.mask_sample
    assert "engine said no" in row.error and "call 1" in row.error
    assert row.num_turns == 1 and sum(row.response_loss_mask) == len(policy.calls[0][1])
    assert_token_exact(row, policy)
    assert "verify" not in [e[0] for e in env.log] and env.log[-1][0] == "close_session"


def test_logprob_mismatch_is_a_model_error(chat):
    class Short(FakePolicy):
        async def generate(self, prompt_token_ids, sampling, session_id=None):
            g = await super().generate(prompt_token_ids, sampling, session_id)
            return g.model_copy(update={"logprobs": g.logprobs[:-1]})

    [row] = run(ToolCallingAgent, Short(chat, ["hi"]), FakeEnv(), chat)
    assert row.status == Status.MODEL_ERROR and "logprobs for" in row.error
    assert row.response_token_ids == [] and row.prompt_token_ids


@pytest.mark.parametrize("method", ["seed_session", "tools", "call_tool", "verify"])
def test_env_failures_are_env_error_rows(chat, method):
    policy = FakePolicy(chat, [CALL.format("Paris"), "It is sunny."])
    env = FakeEnv(fail_on={method})
    [row] = run(ToolCallingAgent, policy, env, chat)
    assert row.status == Status.ENV_ERROR and f"env {method if method != 'call_tool' else 'tool get_weather'}" in row.error
    assert "failed on purpose" in row.error and row.mask_sample
    row.check_invariants()
    assert env.log[-1][0] == "close_session"
    if method in ("seed_session", "tools"):
        assert not policy.calls and not row.prompt_token_ids
    else:
        assert_token_exact(row, policy)


def test_a_seed_failure_met_at_the_first_tool_call_names_the_seed_stage(chat):
    """A client that sends the seed with the session's first call raises `SeedError` there."""
    policy = FakePolicy(chat, [CALL.format("Paris"), "It is sunny."])
    [row] = run(ToolCallingAgent, policy, FakeEnv(fail_on={"call_tool"}, exc=SeedError), chat)
    assert (row.status, row.failure_stage, row.mask_sample) == (Status.ENV_ERROR, FailureStage.SEED, True)
    assert "env tool get_weather: SeedError: call_tool failed on purpose" == row.error
    assert_token_exact(row, policy)


def test_verify_result_error_is_env_error(chat):
    [row] = run(ToolCallingAgent, FakePolicy(chat, ["It is sunny."]), FakeEnv(verify_error="judge timed out"), chat)
    assert row.status == Status.ENV_ERROR and row.error == "verify: judge timed out"


@pytest.mark.parametrize("exc", [InfraError("replica gone"), ray.exceptions.ActorUnavailableError("dead", None)])
def test_infra_errors_raise_for_retry(chat, exc):
    policy = FakePolicy(chat, [Reply("", raise_error=exc)])
    env = FakeEnv()
    with pytest.raises(InfraError, match="policy generate"):
        run(ToolCallingAgent, policy, env, chat)
    env = FakeEnv(fail_on={"call_tool"}, exc=ray.exceptions.RayActorError)
    with pytest.raises(InfraError, match="env tool get_weather"):
        run(ToolCallingAgent, FakePolicy(chat, [CALL.format("Paris")]), env, chat)
    assert "close_session" not in [e[0] for e in env.log]  # the collector retries with a new session


def test_env_step_agent_rewards_per_step(chat):
    steps = [("Your hand: 18. Dealer shows 10.", 0.0, False), ("Dealer busts.", 1.0, True)]
    policy = FakePolicy(chat, ["hit", " stick \n"])
    env = FakeEnv(steps=steps)
    task = Task(task_id="b1", env="blackjack", prompt=[Message(role="system", content="Play blackjack.")])
    [row] = run(EnvStepAgent, policy, env, chat, task=task, cls="gym_ray.agents.env_step:EnvStepAgent")
    assert (row.status, row.turn_rewards, row.reward, row.num_turns, row.truncated) == ("ok", [0.0, 1.0], 1.0, 2, False)
    assert [e[2] for e in env.log if e[0] == "step"] == ["hit", "stick"]
    assert [m["role"] for m in messages(row)] == ["system", "user", "assistant", "user", "assistant"]
    assert json.loads(row.metrics_json)["stop_reason"] == "done"
    assert env.log[0][0] == "reset" and env.log[-1][0] == "close_session"
    assert_token_exact(row, policy)


def test_env_step_agent_turn_limit_and_step_error(chat):
    env = FakeEnv(steps=[("again", 0.5, False)])
    [row] = run(EnvStepAgent, FakePolicy(chat, ["hit"]), env, chat, max_turns=3)
    assert row.truncated and row.turn_rewards == [0.5] * 3 and row.reward == 1.5
    env = FakeEnv(steps=[("again", 0.5, False)], fail_on={"step"})
    [row] = run(EnvStepAgent, FakePolicy(chat, ["hit"]), env, chat)
    assert row.status == Status.ENV_ERROR and "env step" in row.error and row.num_turns == 1
    env = FakeEnv(fail_on={"reset"})
    [row] = run(EnvStepAgent, FakePolicy(chat, ["hit"]), env, chat)
    assert row.status == Status.ENV_ERROR and not row.prompt_token_ids


@pytest.mark.parametrize("cache_tools", [True, False])
def test_env_tools_fetched_once_per_env_unless_disabled(chat, cache_tools):
    env = FakeEnv()
    cfg = AgentConfig(kwargs={"cache_tools": cache_tools})
    agent = ToolCallingAgent(cfg)
    for i in range(3):
        ctx = EpisodeContext(policy=FakePolicy(chat, ["It is sunny."]), env=env, tokenizer=chat,
                             sampling=SamplingConfig(), config=cfg, rollout_id=f"r{i}", group_id="g",
                             rollout_index=0, group_size=1, session_id=f"s{i}")
        [row] = asyncio.run(agent.run(TASK, ctx))
        assert row.status == "ok" and "get_weather" in chat.hf.decode(row.prompt_token_ids)
    assert sum(1 for e in env.log if e[0] == "tools") == (1 if cache_tools else 3)
