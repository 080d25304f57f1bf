"""End to end with the real default model on vLLM CPU behind ray.serve.llm (one engine for the module)."""

from __future__ import annotations

import asyncio

import pytest

from gym_ray.config import ModelConfig, SamplingConfig

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingConfig(temperature=0.0, max_tokens=24)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def hosted(shared_vllm):
    """The session's engine (tests/conftest.py): the default model as `gym-ray run` deploys it."""
    from gym_ray.models.deploy import serve_http_base

    cfg, app = shared_vllm
    return ModelConfig(**cfg), app, serve_http_base(f"/{app}") + "/v1"


@pytest.fixture(scope="module")
def client(hosted):
    from gym_ray.models.client import make_policy_client

    return make_policy_client(hosted[0], hosted[1])


@pytest.fixture(scope="module")
def prompt_ids(client) -> list[int]:
    """The question as the engine's chat template (the agents' `chatml_tools`) renders it."""
    from transformers import AutoTokenizer

    from gym_ray.agents.tokenizer import SHIPPED_TEMPLATES

    tok = AutoTokenizer.from_pretrained(client.tokenizer_path())
    ids = tok.apply_chat_template(QUESTION, chat_template=SHIPPED_TEMPLATES["chatml_tools"].read_text(),
                                  add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.fixture(scope="module")
def greedy(client, prompt_ids):
    return run(client.generate(prompt_ids, GREEDY, session_id="episode-1"))


def test_generate_by_handle_returns_ids_and_logprobs(greedy):
    assert greedy.model == "policy" and greedy.policy_version == 0
    assert greedy.token_ids and len(greedy.logprobs) == len(greedy.token_ids)
    assert all(lp <= 0.0 for lp in greedy.logprobs)
    assert "Paris" in greedy.text
    if greedy.finish_reason == "stop":
        assert greedy.token_ids[-1] == 2  # <|im_end|>


def test_openai_chat_over_http_gives_the_same_tokens(hosted, prompt_ids, greedy):
    from openai import OpenAI

    oai = OpenAI(base_url=hosted[2], api_key="unused")
    assert [m.id for m in oai.models.list().data] == ["policy"]
    r = oai.chat.completions.create(
        model="policy", messages=QUESTION, temperature=0.0, max_tokens=24, logprobs=True, top_logprobs=1,
        extra_body={"return_token_ids": True},
    ).model_dump()
    assert r["prompt_token_ids"] == prompt_ids and r["policy_version"] == 0
    choice = r["choices"][0]
    assert choice["token_ids"] == greedy.token_ids
    http_lps = [c["logprob"] for c in choice["logprobs"]["content"]]
    assert http_lps == pytest.approx(greedy.logprobs[: len(http_lps)], abs=1e-3)
    c = oai.completions.create(model="policy", prompt=prompt_ids, temperature=0.0, max_tokens=24, logprobs=1,
                               extra_body={"return_token_ids": True}).model_dump()
    assert c["choices"][0]["token_ids"] == greedy.token_ids and c["policy_version"] == 0


def test_max_tokens_cut_off_is_length(client, prompt_ids, greedy):
    gen = run(client.generate(prompt_ids, SamplingConfig(temperature=0.0, max_tokens=3)))
    assert gen.finish_reason == "length"
    assert gen.token_ids == greedy.token_ids[:3]


def test_weight_update_raises_the_stamped_version(client, prompt_ids, greedy):
    from gym_ray.types import Message

    async def flow():
        before = await client.collective_rpc("compute_weight_checksums")
        await client.pause(mode="wait")
        assert await client.is_paused()
        version = await client.update_weights("reload_weights")
        await client.resume()
        after = await client.collective_rpc("compute_weight_checksums")
        gen = await client.generate(prompt_ids, GREEDY)
        chat = await client.chat([Message(**QUESTION[0])], None, GREEDY)
        await client.set_policy_version(0)  # the shared engine goes on as it was for the tests after this one
        return before, version, after, gen, chat

    before, version, after, gen, chat = run(flow())
    assert version == 1
    assert before == after and before[0][0]  # reloaded from the same checkpoint: same weights
    assert gen.policy_version == 1 and gen.token_ids == greedy.token_ids
    assert chat["policy_version"] == 1


def test_chat_by_handle(client, greedy):
    from gym_ray.types import Message

    r = run(client.chat([Message(**QUESTION[0])], None, GREEDY))
    choice = r["choices"][0]
    assert choice["token_ids"] == greedy.token_ids
    assert r["policy_version"] >= 0 and r["model"] == "policy"
