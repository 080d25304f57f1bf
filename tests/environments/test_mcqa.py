"""mcqa: strict and lenient letter extraction through the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gym_ray.config import load_config
from gym_ray.resources import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import Message, Task

ENV_DIR = Path(__file__).parents[2] / "environments" / "mcqa"


def env_and_tasks():
    cfg = load_config(ENV_DIR / "config.yaml")
    return make_env_client("mcqa", cfg.envs["mcqa"]), load_tasks(cfg.envs["mcqa"].data)


def score(env, task: Task, answer: str | None):
    async def go():
        await env.seed_session("s", task)
        messages = [*task.prompt] + (
            [Message(role="assistant", content=answer)] if answer is not None else []
        )
        return await env.verify("s", task, messages)

    return asyncio.run(go())


def test_right_wrong_and_malformed_answers():
    env, tasks = env_and_tasks()
    assert len(tasks) >= 5
    for task in tasks:
        expected = task.verifier_metadata["expected_answer"]
        wrong_letter = "A" if expected != "A" else "B"
        assert score(env, task, f"Let me think. \\boxed{{{expected}}}").reward == 1.0
        assert score(env, task, f"Answer: {expected}").reward == 1.0
        wrong = score(env, task, f"\\boxed{{{wrong_letter}}}")
        assert wrong.reward == 0.0 and wrong.info["reason"] == f"chose {wrong_letter}, expected {expected}"
        malformed = score(env, task, "I am not sure.")
        assert malformed.reward == 0.0 and malformed.info["reason"].startswith("no answer found")
        assert score(env, task, None).info["reason"] == "no final answer"


def test_grading_mode_comes_from_the_row():
    env, tasks = env_and_tasks()
    strict = next(t for t in tasks if t.verifier_metadata["grading_mode"] == "strict")
    lenient = next(t for t in tasks if t.verifier_metadata["grading_mode"] == "lenient")
    for task, full in ((strict, 0.0), (lenient, 1.0)):
        letter = task.verifier_metadata["expected_answer"]
        text = next(iter(task.verifier_metadata["options"][ord(letter) - ord("A")].values()))
        assert score(env, task, f"I believe the answer is ({letter}).").reward == full
        assert score(env, task, f"\\boxed{{{text}}}").reward == full
