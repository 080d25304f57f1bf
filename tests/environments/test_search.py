"""search: a scripted researcher (search the question, open the best page, answer from it) scores 1.0 on
every task, one and two hops; wrong, untagged and near answers score by EM / F1; tool errors are text."""

from __future__ import annotations

import asyncio
import re

import pytest
from env_helpers import ToolSession, env_and_tasks
from gym_ray_env_search.server import f1, normalize

from gym_ray.resources.client import make_env_client
from gym_ray.types import Message, ToolCall

_FACTS = {  # what each question asks -> the page sentence that states it
    "Who founded": r"founded in \d+ by ([^.]+)\.",
    "In which year": r"founded in (\d+)",
    "In which province": r"in the province of (\w+)",
    "Which river": r"The river (\w+) flows",
}


async def research(env, sid, task, answer_for=None):
    """The scripted policy: search the question, open the top hit, answer with the fact the question asks."""
    question = task.prompt[-1].content
    await env.seed_session(sid, task)
    tools = ToolSession(env, sid, task)
    call, messages = tools.call, tools.messages

    hits = await call("search", query=question)
    page = await call("open_page", title=hits.split("\n")[0].split(". ", 1)[1].split(":")[0])
    pattern = next(p for q, p in _FACTS.items() if question.startswith(q))
    fact = re.search(pattern, page).group(1)
    answer = answer_for(fact) if answer_for else f"The answer is <answer>{fact}</answer>."
    messages.append(Message(role="assistant", content=answer))
    result = await env.verify(sid, task, messages)
    await env.close_session(sid)
    return result


def test_scripted_researcher_scores_one_on_every_task():
    env, tasks = env_and_tasks("search")
    assert len(tasks) == 30 and {t.verifier_metadata["hops"] for t in tasks} == {1, 2}

    async def go():
        return await asyncio.gather(*(research(env, f"s{i}", t) for i, t in enumerate(tasks)))

    for t, result in zip(tasks, asyncio.run(go()), strict=True):
        assert result.reward == 1.0, (t.prompt[-1].content, result)
        assert result.components == {"em": 1.0, "f1": 1.0, "opened_gold_page": 1.0}


def test_wrong_untagged_and_partial_answers():
    env, tasks = env_and_tasks("search")
    founder = next(t for t in tasks if t.prompt[-1].content.startswith("Who founded"))
    wrong = asyncio.run(research(env, "w", founder, lambda fact: "<answer>Nobody Atall</answer>"))
    assert wrong.reward == 0.0 and wrong.components["em"] == 0.0 and wrong.components["f1"] == 0.0
    untagged = asyncio.run(research(env, "u", founder, lambda fact: f"It was {fact}."))
    assert untagged.reward == 0.0 and "no <answer>" in untagged.info["reason"]
    first_name_only = lambda fact: f"<answer>{fact.split()[0]}</answer>"  # noqa: E731
    half = asyncio.run(research(env, "h", founder, first_name_only))
    assert half.reward == 0.0 and half.components["f1"] == pytest.approx(2 / 3)
    by_f1 = make_env_client("search", env.cfg.model_copy(update={"config": {**env.cfg.config, "metric": "f1"}}))
    assert asyncio.run(research(by_f1, "f", founder, first_name_only)).reward == pytest.approx(2 / 3)


def test_tools_and_scoring_helpers():
    env, tasks = env_and_tasks("search")

    async def go():
        await env.seed_session("t", tasks[0])
        out = [await env.call_tool("t", ToolCall(name="open_page", arguments={"title": "Atlantis"})),
               await env.call_tool("t", ToolCall(name="search", arguments={"query": "zzzz qqqq"})),
               await env.tools()]
        await env.close_session("t")
        return out

    missing, nothing, specs = asyncio.run(go())
    assert missing.startswith("Error: open_page failed") and "no page titled 'Atlantis'" in missing
    assert nothing == "No results."
    assert [s.name for s in specs] == ["search", "open_page"]
    assert normalize("The  Salt-Mines!") == "saltmines" and f1("x b c", "b c d") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"^config.metric: 'bleu'"):
        bad = make_env_client("search", env.cfg.model_copy(update={"config": {"metric": "bleu"}}))
        asyncio.run(bad.tools())
