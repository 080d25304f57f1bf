"""Admission of an oversized prompt: refused by its size before it is tokenized, and its failure row stays
small (the task's text cut, with its size and digest), whichever path writes the row."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re

import pyarrow.parquet as pq
import pytest
from agent_fakes import FakeEnv, FakePolicy

from gym_ray.agents.base import EpisodeContext, load_tokenizer
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.collect.plan import plan_groups
from gym_ray.config import AgentConfig, SamplingConfig
from gym_ray.episodes import EpisodeService
from gym_ray.tasks import FAILED_ROW_KEEP_CHARS
from gym_ray.types import Message, Task, rollouts_to_arrow

PROMPT_CHARS = 3 * 2**20  # 3 MiB: far past any context here, small enough for a test
SMALL_ROW_BYTES = 64 * 1024


@pytest.fixture
def chat(default_model_path, monkeypatch):
    """The run's tokenizer, recording the length of every text it renders or encodes."""
    chat = load_tokenizer(default_model_path, "chatml_tools")
    seen: list[int] = []
    encode, render = chat.encode, chat.render

    def counted_encode(text):
        seen.append(len(text))
        return encode(text)

    def counted_render(messages, tools=None, add_generation_prompt=True):
        seen.append(sum(len(m.get("content") or "") for m in messages))
        return render(messages, tools, add_generation_prompt)

    monkeypatch.setattr(chat, "encode", counted_encode)
    monkeypatch.setattr(chat, "render", counted_render)
    chat.seen = seen
    return chat


def _huge_task() -> Task:
    body = "lorem ipsum dolor sit amet " * (PROMPT_CHARS // 27)
    return Task(task_id="big", env="weather", prompt=[Message(role="system", content="Be brief."),
                                                       Message(role="user", content=body)],
                verifier_metadata={"answer": "sunny", "notes": body})


def _parquet_bytes(rows) -> int:
    buf = io.BytesIO()
    pq.write_table(rollouts_to_arrow(rows), buf)
    return buf.tell()


def _assert_small_with_record(row, task: Task) -> None:
    assert _parquet_bytes([row]) < SMALL_ROW_BYTES
    for text in (row.prompt_messages_json, row.messages_json, row.task_json):
        assert len(text) < 4 * FAILED_ROW_KEEP_CHARS
    prompt = json.loads(row.prompt_messages_json)
    assert [m["role"] for m in prompt] == ["system", "user"] and prompt[0]["content"] == "Be brief."
    assert prompt[1]["content"].endswith(f"[gym_ray: cut to {FAILED_ROW_KEEP_CHARS} of {len(task.prompt[1].content)} "
                                         "characters]")
    cut = json.loads(row.task_json)  # still the task's shape, its long strings cut
    assert (cut["task_id"], cut["verifier_metadata"]["answer"]) == ("big", "sunny")
    full = json.dumps([m.to_openai() for m in task.prompt], ensure_ascii=False)
    metrics = json.loads(row.metrics_json)
    assert metrics["prompt_chars"] == sum(len(m.content) for m in task.prompt)
    assert metrics["prompt_sha256"] == hashlib.sha256(full.encode()).hexdigest()


@pytest.mark.parametrize("agent_cls", [ToolCallingAgent, EnvStepAgent])
def test_oversized_prompt_is_refused_by_size_untokenized_with_a_small_row(chat, agent_cls):
    task = _huge_task()
    policy, env = FakePolicy(chat, ["unused"]), FakeEnv()
    cfg = AgentConfig()
    ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(), config=cfg,
                         rollout_id="g1-0", group_id="g1", rollout_index=0, group_size=1, session_id="g1-0.a0")
    [row] = asyncio.run(agent_cls(cfg).run(task, ctx))
    assert (row.status, row.mask_sample, row.failure_stage, row.failure_kind, row.failure_delivery) == (
        "model_error", True, "admission", "prompt_too_long", "not_sent")
    chars = int(re.match(r"prompt of (\d+) characters cannot fit the token budget 2048 ", row.error).group(1))
    assert chars >= sum(len(m.content) for m in task.prompt)  # the env-step agent adds its first observation
    assert not row.prompt_token_ids and not row.response_token_ids and not policy.calls
    assert max(chat.seen, default=0) < 2048 * chat.longest_token_chars  # never handed the whole prompt
    _assert_small_with_record(row, task)


def test_failure_rows_of_the_collector_keep_a_cut_task(chat):
    """A row the collector writes itself (here: an env the run does not define) bounds the task too."""
    task = _huge_task().model_copy(update={"env": "nowhere"})
    service = EpisodeService({}, FakePolicy(chat, ["unused"]), tokenizer=chat, sampling=SamplingConfig())
    [group] = plan_groups([task], 1, "run")
    [row] = asyncio.run(service.run(task, 0, group))
    assert (row.status, row.failure_stage, row.failure_kind) == ("env_error", "admission", "unknown_env")
    _assert_small_with_record(row, task)


@pytest.mark.parametrize(("message", "kind"), [
    ("The decoder prompt (length 2153) is longer than the maximum model length of 2048.", "prompt_too_long"),
    ("engine exploded", "exception")])
def test_the_engine_refusing_a_prompt_over_its_context_is_prompt_too_long(chat, message, kind):
    """A prompt inside the agent's budget but over the engine's context: the engine's refusal is named as such,
    any other engine error stays an exception."""
    from agent_fakes import Reply

    task = Task(task_id="t", env="weather", prompt=[Message(role="user", content="hi")])
    policy, env = FakePolicy(chat, [Reply("", raise_error=ValueError(message))]), FakeEnv()
    cfg = AgentConfig(max_total_tokens=8192)
    ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(), config=cfg,
                         rollout_id="g1-0", group_id="g1", rollout_index=0, group_size=1, session_id="g1-0.a0")
    [row] = asyncio.run(ToolCallingAgent(cfg).run(task, ctx))
    assert (row.status, row.failure_stage, row.failure_kind) == ("model_error", "generate", kind)
