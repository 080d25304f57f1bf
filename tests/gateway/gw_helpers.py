"""Shared parts of the gateway tests: the weather env, a recording scripted policy, agent programs and the
token-exact check against what the engine was given and returned."""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from pathlib import Path

import httpx

from gym_ray.agents.base import load_tokenizer
from gym_ray.config import AgentConfig, EnvConfig, ModelConfig, SamplingConfig, load_config
from gym_ray.episodes import EnvSpec, EpisodeService, Group
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.tasks import load_tasks

WEATHER = Path(__file__).resolve().parents[2] / "environments" / "weather"
_RESULT = re.compile(r"The weather in (.+?) is (\w+), (-?\d+) °C\.")
_CITY = re.compile(r"(?:in|for) ([A-Z][a-z]+(?: [A-Z][a-z]+)*)")


def weather_script(prompt_text: str, turn: int):
    """Turn 0: call get_weather for the city asked about; then answer from the tool result in the prompt."""
    results = _RESULT.findall(prompt_text)
    if not results:
        city = _CITY.findall(prompt_text.split("<|im_start|>user", 1)[1])[0]
        return {"name": "get_weather", "arguments": {"city": city}}
    city, condition, temp = results[-1]
    return f"In {city} it is {condition}, {temp} °C."


class RecordingPolicy:
    """The scripted policy as a PolicyClient, with distinct nonzero logprobs (a check of logprobs against
    all-zero ones proves nothing) and a record of every call: (prompt ids, generated ids, logprobs)."""

    def __init__(self, policy: ScriptedPolicy, tokenizer_path: str, version: int = 3):
        self.policy = policy
        self.model_name = policy.model_name
        self._path = tokenizer_path
        policy.updates.version = version
        self.calls: list[tuple[list[int], list[int], list[float]]] = []

    def tokenizer_path(self) -> str:
        return self._path

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        gen = await self.policy.generate(list(prompt_token_ids), sampling)
        salt = zlib.crc32(bytes(str(len(self.calls)), "ascii"))
        gen.logprobs = [-((t * 7919 + i * 31 + salt) % 1000) / 1000.0 - 0.001 for i, t in enumerate(gen.token_ids)]
        self.calls.append((list(prompt_token_ids), list(gen.token_ids), list(gen.logprobs)))
        return gen

    async def chat(self, messages, tools, sampling):
        raise NotImplementedError


def weather_setup(model_path: str, agent_kwargs: dict, *, template: str = "chatml_tools", max_tokens: int = 128,
                  script: str = "gw_helpers:weather_script", policy_cls=None, **agent_fields):
    """An EpisodeService over the real weather env with an ExternalAgent, its tasks and the recording policy."""
    env_cfg: EnvConfig = load_config(WEATHER / "config.yaml").envs["weather"]
    agent = AgentConfig(cls="gym_ray.gateway.agent:ExternalAgent", kwargs=agent_kwargs, **agent_fields)
    env_cfg = env_cfg.model_copy(update={"agent": agent})
    tasks = load_tasks(env_cfg.data, default_env="weather")
    policy = (policy_cls or RecordingPolicy)(
        ScriptedPolicy(ModelConfig(kind="scripted", name="scripted", script=script), model_path), model_path)
    chat = load_tokenizer(model_path, template)
    runner = EpisodeService({"weather": EnvSpec(config=env_cfg)}, policy, tokenizer=chat,
                            sampling=SamplingConfig(max_tokens=max_tokens), episode_timeout_s=120)
    return runner, tasks, policy


def group(task, group_size: int = 1) -> Group:
    return Group(f"g-{task.task_id}", group_size=group_size)


def assert_token_exact(rows, calls) -> None:
    """Every segment against the engine calls it holds (in order): each generated id and logprob is the
    engine's, each call's prompt is the segment's sequence up to that span, and prompt + response of the
    segment is the engine's prompt + output of its last call. Masks are 1 exactly on generated tokens."""
    spans = [(row, k) for row in rows for k in range(len(row.gen_span_starts))]
    assert len(spans) == len(calls), f"{len(spans)} recorded spans for {len(calls)} engine calls"
    for (row, k), (prompt, gen, logprobs) in zip(spans, calls, strict=True):
        row.check_invariants()
        full = row.prompt_token_ids + row.response_token_ids
        n = len(row.prompt_token_ids)
        start, end = row.gen_span_starts[k], row.gen_span_ends[k]
        assert row.response_token_ids[start:end] == gen
        assert row.response_logprobs[start:end] == logprobs
        assert full[: n + start] == prompt, f"segment {row.segment_index} call {k}: prompt is not the sequence"
        if k == len(row.gen_span_starts) - 1:
            assert full == prompt + gen, f"segment {row.segment_index}: does not end with its last call"
    for row in rows:
        mask = [0] * len(row.response_token_ids)
        for s, e in zip(row.gen_span_starts, row.gen_span_ends, strict=True):
            mask[s:e] = [1] * (e - s)
        assert row.response_loss_mask == mask
        assert all(lp == 0.0 for lp, m in zip(row.response_logprobs, row.response_loss_mask, strict=True) if not m)


# -- agent programs (the things under test call them through ExternalAgent) ------------------------------

async def openai_loop(base_url: str, model: str, task, tools_url: str) -> str:
    """A plain `openai` client tool loop: tools from the gateway's env endpoint, calls run there too."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    async with httpx.AsyncClient(timeout=30) as http:
        tools = (await http.get(tools_url)).raise_for_status().json()
        messages = [m.to_openai() for m in task.prompt]
        for _ in range(6):
            r = await client.chat.completions.create(model=model, messages=messages, tools=tools, logprobs=True)
            msg = r.choices[0].message
            messages.append(msg.model_dump(exclude_none=True))
            if not msg.tool_calls:
                return msg.content
            for c in msg.tool_calls:
                out = await http.post(f"{tools_url}/{c.function.name}", json=json.loads(c.function.arguments))
                messages.append({"role": "tool", "tool_call_id": c.id, "content": out.raise_for_status().json()["output"]})
    raise RuntimeError("no final answer in 6 calls")


async def _agents_sdk(model_class: str, base_url: str, model: str, task, tools_url: str, stream: bool) -> str:
    """The OpenAI Agents SDK: an Agent with a function tool (calling the env's tool over HTTP), run by its
    Runner, on the SDK's model class `model_class` (Chat Completions or Responses)."""
    import agents
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    @function_tool
    async def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: The city name, e.g. "Paris".
        """
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(f"{tools_url}/get_weather", json={"city": city})
            return r.raise_for_status().json()["output"]

    system = next(m.content for m in task.prompt if m.role == "system")
    user = next(m.content for m in task.prompt if m.role == "user")
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    agent = Agent(name="weather", instructions=system, tools=[get_weather],
                  model=getattr(agents, model_class)(model=model, openai_client=client))
    if stream:
        result = Runner.run_streamed(agent, user, max_turns=6)
        async for _ in result.stream_events():
            pass
        return result.final_output
    result = await Runner.run(agent, user, max_turns=6)
    return result.final_output


async def openai_agents_sdk(base_url: str, model: str, task, tools_url: str, stream: bool = False) -> str:
    return await _agents_sdk("OpenAIChatCompletionsModel", base_url, model, task, tools_url, stream)


async def openai_agents_sdk_streamed(base_url: str, model: str, task, tools_url: str) -> str:
    return await openai_agents_sdk(base_url, model, task, tools_url, stream=True)


def episode_for(task, policy, chat, *, env=None, config: AgentConfig | None = None, max_tokens: int = 128,
                session_id: str = "s0"):
    """An Episode (the gateway records into it) over `policy`, outside any runner."""
    from gym_ray.agents.base import EpisodeContext
    from gym_ray.agents.episode import Episode

    if env is None:
        from gym_ray.resources.client import make_env_client

        env = make_env_client("weather", load_config(WEATHER / "config.yaml").envs["weather"])
    ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(max_tokens=max_tokens),
                         config=config or AgentConfig(), rollout_id="r0", group_id="g0", rollout_index=0,
                         group_size=1, session_id=session_id)
    return Episode(task, ctx)


async def sleeps_forever(base_url: str, model: str, task) -> None:
    """Calls the model once, then hangs (the timeout row must keep that call's tokens)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    await client.chat.completions.create(model=model, messages=[m.to_openai() for m in task.prompt])
    await asyncio.sleep(3600)


async def crashes(base_url: str, model: str, task) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    await client.chat.completions.create(model=model, messages=[m.to_openai() for m in task.prompt])
    raise KeyError("the agent program's own bug")


async def never_calls(base_url: str, model: str, task) -> str:
    return "I answered without asking the model."


async def calls_after_return(base_url: str, model: str, task) -> str:
    """Leaves a call running in the background past its return: it must get 410 and not be recorded."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    msgs = [m.to_openai() for m in task.prompt]
    await client.chat.completions.create(model=model, messages=msgs)

    async def late():
        await asyncio.sleep(0.2)
        try:
            await client.chat.completions.create(model=model, messages=msgs)
        except Exception as e:
            LATE.append(e)

    LATE_TASKS.append(asyncio.get_running_loop().create_task(late()))
    return "done"


LATE: list = []
LATE_TASKS: list = []


def failing_script(prompt_text: str, turn: int):
    raise RuntimeError("engine exploded")


class ActorRecordingPolicy:
    """Wraps a PolicyClient inside agent actors; sends (session, prompt ids, generated ids, logprobs) of every
    call to a recorder actor, so the driver can check the Parquet rows against the engine."""

    def __init__(self, inner, recorder):
        self.inner, self.recorder = inner, recorder
        self.model_name = inner.model_name

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        gen = await self.inner.generate(prompt_token_ids, sampling, session_id)
        engine_prompt = gen.extra.get("prompt_token_ids", list(prompt_token_ids))
        await self.recorder.add.remote(session_id, list(engine_prompt), list(gen.token_ids), list(gen.logprobs))
        return gen

    async def chat(self, messages, tools, sampling):
        return await self.inner.chat(messages, tools, sampling)

    def tokenizer_path(self) -> str:
        return self.inner.tokenizer_path()

    def __getattr__(self, name):  # max_model_len etc.; not while unpickling (no `inner` yet)
        if name.startswith("__") or name in ("inner", "recorder"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def recorder_actor():
    import ray

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self):
            self.calls: dict = {}

        def add(self, session_id, prompt, generated, logprobs):
            self.calls.setdefault(session_id, []).append((prompt, generated, logprobs))

        def dump(self):
            return self.calls

    return Recorder.remote()


def sync_openai_loop(base_url: str, model: str, task) -> str:
    """A synchronous program (the `openai` sync client, no tools): run in a worker thread by ExternalAgent."""
    from openai import OpenAI

    r = OpenAI(base_url=base_url, api_key="unused", max_retries=0).chat.completions.create(
        model=model, messages=[m.to_openai() for m in task.prompt])
    return r.choices[0].message.content or ""


async def openai_agents_sdk_responses(base_url: str, model: str, task, tools_url: str, stream: bool = False) -> str:
    """The Agents SDK with its default model class, `OpenAIResponsesModel` (the Responses API)."""
    return await _agents_sdk("OpenAIResponsesModel", base_url, model, task, tools_url, stream)


async def openai_agents_sdk_responses_streamed(base_url: str, model: str, task, tools_url: str) -> str:
    return await openai_agents_sdk_responses(base_url, model, task, tools_url, stream=True)


class FlakyPolicy(RecordingPolicy):
    """Its first call dies like a lost replica (a Ray infrastructure error); later calls answer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed_sessions: list[str] = []
        self.sessions: list[str] = []

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        import ray.exceptions

        self.sessions.append(session_id)
        if not self.failed_sessions:
            self.failed_sessions.append(session_id)
            raise ray.exceptions.RayActorError(error_msg="replica died")
        return await super().generate(prompt_token_ids, sampling, session_id)
