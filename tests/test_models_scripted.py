"""The scripted policy: vLLM-shaped token outputs, tool-call replies, and the hosted path on real Ray/Serve."""

from __future__ import annotations

import asyncio
import json
import pickle

import pytest

from gym_ray.clients import Generation, PolicyClient
from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.models.scripted import ScriptedPolicy, ScriptError

TOOL_REPLY = {"name": "get_weather", "arguments": {"city": "Paris"}}
REPLIES = [TOOL_REPLY, "It is sunny in Paris."]


def prompt_for(tok, turns: int) -> list[int]:
    """A ChatML prompt holding `turns` earlier assistant turns, ending in a generation header."""
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    for i in range(turns):
        msgs += [{"role": "assistant", "content": f"turn {i}"}, {"role": "tool", "content": "sunny"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def script_reply(prompt: str, turn: int) -> str:
    return f"turn={turn} saw_paris={'Paris' in prompt}"


@pytest.fixture(scope="module")
def policy(default_model_path) -> ScriptedPolicy:
    return ScriptedPolicy(ModelConfig(kind="scripted", replies=REPLIES), default_model_path)


def run(coro):
    return asyncio.run(coro)


def test_replies_follow_turns_and_end_with_eos(policy):
    tok = policy.tokenizer
    first = run(policy.generate(prompt_for(tok, 0), SamplingConfig()))
    assert first.finish_reason == "stop"
    assert first.token_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(first.logprobs) == len(first.token_ids)
    call = first.text.split("<tool_call>")[1].split("</tool_call>")[0]
    assert json.loads(call) == TOOL_REPLY
    assert tok.decode(first.token_ids[:-1]) == first.text
    second = run(policy.generate(prompt_for(tok, 1), SamplingConfig()))
    assert second.text == "It is sunny in Paris."
    # past the script's end the last reply repeats
    assert run(policy.generate(prompt_for(tok, 5), SamplingConfig())).text == "It is sunny in Paris."


def test_max_tokens_cut_gives_length(policy):
    tok = policy.tokenizer
    gen = run(policy.generate(prompt_for(tok, 1), SamplingConfig(max_tokens=3)))
    assert gen.finish_reason == "length"
    assert len(gen.token_ids) == 3
    assert gen.token_ids == tok.encode("It is sunny in Paris.", add_special_tokens=False)[:3]
    assert gen.text == tok.decode(gen.token_ids)


def test_stop_string_ends_the_text(policy):
    gen = run(policy.generate(prompt_for(policy.tokenizer, 1), SamplingConfig(stop=[" in"])))
    assert gen.finish_reason == "stop"
    assert gen.text == "It is sunny"
    assert policy.tokenizer.decode(gen.token_ids) == "It is sunny in"


def test_script_function_sees_prompt_and_turn(default_model_path):
    pol = ScriptedPolicy(ModelConfig(kind="scripted", script=f"{__name__}:script_reply"), default_model_path)
    gen = run(pol.generate(prompt_for(pol.tokenizer, 2), SamplingConfig()))
    assert gen.text == "turn=2 saw_paris=True"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of model.replies"),
        ({"replies": ["a"], "script": "x:y"}, "exactly one of model.replies"),
        ({"replies": ["ok", 3]}, "model.replies[1]"),
        ({"script": "no_colon"}, "expected 'module:function'"),
        ({"script": "gym_ray.nope:fn"}, "cannot load"),
    ],
)
def test_bad_scripts_are_named(default_model_path, fields, message):
    with pytest.raises(ScriptError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ScriptedPolicy(ModelConfig(kind="scripted", **fields), default_model_path)


def test_empty_prompt_is_refused(policy):
    with pytest.raises(ValueError, match="prompt_token_ids is empty"):
        run(policy.generate([], SamplingConfig()))


def test_local_hosting_runs_in_the_caller(policy):
    from gym_ray.models.client import make_policy_client
    from gym_ray.models.deploy import deploy_policy
    from gym_ray.types import Message

    cfg = ModelConfig(kind="scripted", name="local", replies=REPLIES, hosting="local")
    assert deploy_policy(cfg, "never_deployed").base_url is None
    client = pickle.loads(pickle.dumps(make_policy_client(cfg, "never_deployed")))
    assert isinstance(client, PolicyClient)
    prompt = prompt_for(policy.tokenizer, 1)
    gen = run(client.generate(prompt, SamplingConfig()))
    assert gen.token_ids == run(policy.generate(prompt, SamplingConfig())).token_ids and gen.model == "local"
    chat = run(client.chat([Message(role="user", content="Weather?")], None, SamplingConfig()))
    assert chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert len(chat["choices"][0]["token_ids"]) == len(chat["choices"][0]["logprobs"]["content"])


# -- hosted on real Ray + Serve ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosted(serve_http_port, default_model_path):
    from gym_ray.models.deploy import delete_policy, deploy_policy

    cfg = ModelConfig(kind="scripted", name="scripted-policy", replies=REPLIES, num_replicas=2)
    endpoint = deploy_policy(cfg, "scripted_test", route_prefix="/scripted_test")
    yield cfg, endpoint
    delete_policy("scripted_test")


def test_endpoint_info(hosted, serve_http_port):
    cfg, ep = hosted
    assert ep.app_name == "scripted_test" and ep.model == "scripted-policy"
    assert ep.base_url == f"http://127.0.0.1:{serve_http_port}/scripted_test/v1"


def test_generate_by_handle_many_concurrent(hosted, policy):
    from gym_ray.models.client import make_policy_client

    cfg, _ = hosted
    clients = [make_policy_client(cfg.model_copy(update={"handle_transport": t}), "scripted_test")
               for t in ("default", "grpc")]
    assert all(isinstance(c, PolicyClient) for c in clients) and clients[1].grpc
    prompts = [prompt_for(policy.tokenizer, i % 2) for i in range(400)]

    async def many():
        return await asyncio.gather(*(
            clients[i % 2].generate(p, SamplingConfig(), session_id=f"s{i % 7}") for i, p in enumerate(prompts)
        ))

    gens = run(many())
    assert all(isinstance(g, Generation) for g in gens)
    for i, g in enumerate(gens):
        expected = run(policy.generate(prompts[i], SamplingConfig()))
        assert g.token_ids == expected.token_ids and g.finish_reason == "stop"
        assert g.model == "scripted-policy"


def test_client_is_picklable_into_an_actor(hosted, policy, ray_cluster):
    import ray

    from gym_ray.models.client import make_policy_client

    cfg, _ = hosted
    client = pickle.loads(pickle.dumps(make_policy_client(cfg, "scripted_test")))

    @ray.remote(num_cpus=0)
    class Caller:
        async def go(self, c, prompt):
            return (await c.generate(prompt, SamplingConfig(max_tokens=4))).model_dump()

    actor = Caller.remote()
    out = ray.get(actor.go.remote(client, prompt_for(policy.tokenizer, 1)))
    assert out["finish_reason"] == "length" and len(out["token_ids"]) == 4
    ray.kill(actor)


def test_openai_client_over_http(hosted):
    from openai import NotFoundError, OpenAI

    cfg, ep = hosted
    oai = OpenAI(base_url=ep.base_url, api_key="unused")
    assert [m.id for m in oai.models.list().data] == ["scripted-policy"]
    r = oai.chat.completions.create(
        model="scripted-policy", messages=[{"role": "user", "content": "Weather in Paris?"}],
        logprobs=True, extra_body={"return_token_ids": True},
    ).model_dump()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert len(choice["token_ids"]) == len(choice["logprobs"]["content"])
    assert r["prompt_token_ids"][-4:] == [1, 520, 9531, 198]  # ends in "<|im_start|>assistant\n"
    c = oai.completions.create(model="scripted-policy", prompt=r["prompt_token_ids"], max_tokens=2,
                               logprobs=1, extra_body={"return_token_ids": True}).model_dump()
    assert c["choices"][0]["finish_reason"] == "length"
    assert c["choices"][0]["token_ids"] == choice["token_ids"][:2]
    with pytest.raises(NotFoundError):
        oai.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


def test_trainer_hooks_pause_and_version(hosted, policy):
    from gym_ray.models.client import make_policy_client

    cfg, _ = hosted
    client = make_policy_client(cfg, "scripted_test")
    prompt = prompt_for(policy.tokenizer, 0)

    async def flow():
        start = await client.policy_version()
        await client.pause()
        assert await client.is_paused()
        pending = asyncio.ensure_future(client.generate(prompt, SamplingConfig()))
        await asyncio.sleep(0.5)
        assert not pending.done()
        new = await client.update_weights("load_weights")
        await client.resume()
        gen = await pending
        after = await client.generate(prompt, SamplingConfig(), session_id="x")
        return start, new, gen, after

    start, new, gen, after = run(flow())
    assert new == start + 1
    assert gen.policy_version == new and after.policy_version == new


def test_external_client_against_the_hosted_endpoint(hosted, policy):
    from gym_ray.models.client import make_policy_client
    from gym_ray.types import Message

    cfg, ep = hosted
    ext = make_policy_client(ModelConfig(kind="openai", base_url=ep.base_url, model=cfg.name), "unused")
    prompt = prompt_for(policy.tokenizer, 1)
    gen = run(ext.generate(prompt, SamplingConfig(max_tokens=4)))
    expected = run(policy.generate(prompt, SamplingConfig(max_tokens=4)))
    assert gen.token_ids == expected.token_ids and gen.finish_reason == "length"
    chat = run(ext.chat([Message(role="user", content="Weather?")], None, SamplingConfig()))
    assert chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
