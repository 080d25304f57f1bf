"""No reward is inferred from a failure: a verifier that raises or returns garbage, a
judge with no verdict, a prompt longer than the context, each end as a masked, non-`ok` row with a failure
record, never as a trainable reward 0."""

from __future__ import annotations

import asyncio
import math

import hostile_envs
import pytest
from agent_fakes import FakeEnv, FakePolicy
from test_agents import TASK, run

from gym_ray.agents.base import load_tokenizer
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import SamplingConfig
from gym_ray.resources import ResourceServer
from gym_ray.resources.local import LocalEnvClient
from gym_ray.resources.verifiers import verify_with_judge
from gym_ray.types import Message


@pytest.fixture(scope="module")
def chat(default_model_path):
    return load_tokenizer(default_model_path, "chatml_tools")


def assert_failed(row, status: str, stage: str, kind: str) -> None:
    assert (row.status, row.mask_sample, row.failure_stage, row.failure_kind) == (status, True, stage, kind)
    assert row.reward == 0.0 and row.reward_component_names == []  # nothing a trainer could learn from
    row.check_invariants()


def test_a_verifier_that_raises_is_an_env_error(chat):
    """A NeMo Gym row without the field the verifier reads (KeyError) used to come back as reward 0."""
    env = LocalEnvClient.of(hostile_envs.RaisingVerify(), "weather")
    [row] = run(ToolCallingAgent, FakePolicy(chat, ["It is sunny."]), env, chat)
    assert_failed(row, "env_error", "verification", "exception")
    assert "KeyError: 'city'" in row.error


class NotANumber(ResourceServer):
    def score(self, task, answer):
        return math.nan


class WrongType(ResourceServer):
    async def verify(self, task, messages):
        return "yes"


@pytest.mark.parametrize("server", [NotANumber(), WrongType()])
def test_a_verifier_returning_garbage_is_bad_output(chat, server):
    env = LocalEnvClient.of(server, "weather")
    [row] = run(ToolCallingAgent, FakePolicy(chat, ["It is sunny."]), env, chat)
    assert_failed(row, "env_error", "verification", "bad_output")


def test_a_verify_result_with_an_error_keeps_no_reward(chat):
    env = FakeEnv(verify_error="judge timed out")  # it also says reward 1.0: that must not be kept
    [row] = run(ToolCallingAgent, FakePolicy(chat, ["It is sunny."]), env, chat)
    assert_failed(row, "env_error", "verification", "exception")


def test_a_step_that_raises_is_an_env_error(chat):
    env = FakeEnv(fail_on={"step"}, steps=[("obs", 1.0, False)])
    [row] = run(EnvStepAgent, FakePolicy(chat, ["hit"]), env, chat)
    assert (row.status, row.failure_stage, row.failure_kind, row.mask_sample) == ("env_error", "tool", "exception", True)


class Rambler:
    """A judge whose reply has no verdict."""

    model_name = "judge"

    async def chat(self, messages, tools, sampling):
        return {"choices": [{"message": {"role": "assistant", "content": "It depends on how you look at it."}}]}


def test_a_judge_without_a_verdict_is_an_error_not_a_zero():
    result = asyncio.run(verify_with_judge("2+2?", "4", "4", Rambler(), sampling=SamplingConfig()))
    assert result.error and result.error_kind == "bad_output"


def test_a_prompt_beyond_the_context_is_a_failed_admission(chat):
    long_task = TASK.model_copy(update={"prompt": [Message(role="user", content="word " * 3000)]})
    policy = FakePolicy(chat, ["never asked"])
    env = FakeEnv()
    [row] = run(ToolCallingAgent, policy, env, chat, task=long_task, max_total_tokens=1024)
    assert_failed(row, "model_error", "admission", "prompt_too_long")
    assert row.failure_delivery == "not_sent" and not policy.calls
    assert "verify" not in [e[0] for e in env.log]
