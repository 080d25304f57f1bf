"""The policy seam: any async token-in/token-out function as a PolicyClient."""

import asyncio

import pytest

from gym_ray.clients import Generation, PolicyClient
from gym_ray.config import SamplingConfig
from gym_ray.models.callable import CallablePolicy


def test_callable_policy_passes_session_and_sampling():
    calls = []

    async def fn(prompt_ids, sampling, request_id):
        calls.append((prompt_ids, sampling.temperature, request_id))
        return Generation(token_ids=[7, 8], logprobs=[-0.5, -0.25], finish_reason="stop", policy_version=3)

    p = CallablePolicy(fn, model_name="trainer", tokenizer_path="/tok")
    assert isinstance(p, PolicyClient) and p.tokenizer_path() == "/tok"
    s = SamplingConfig(temperature=0.7)
    g1 = asyncio.run(p.generate([1, 2], s, "ep-1"))
    asyncio.run(p.generate([1, 2, 7, 8], s, "ep-1"))
    assert g1.model == "trainer" and g1.policy_version == 3
    assert [c[2] for c in calls] == ["ep-1", "ep-1"] and calls[0][1] == 0.7


def test_callable_policy_rejects_bad_output():
    async def short(prompt_ids, sampling, request_id):
        return Generation(token_ids=[7, 8], logprobs=[-0.5], finish_reason="stop")

    with pytest.raises(ValueError, match="2 token ids but 1 logprobs"):
        asyncio.run(CallablePolicy(short, model_name="m", tokenizer_path="t").generate([1], SamplingConfig(), "s"))
    with pytest.raises(NotImplementedError, match="no chat endpoint"):
        asyncio.run(CallablePolicy(short, model_name="m", tokenizer_path="t").chat([], None, SamplingConfig()))
