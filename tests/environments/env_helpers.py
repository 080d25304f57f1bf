"""Steps every environment test shares: build an environment folder's client and tasks, score one answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gym_ray.config import load_config
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import Message, Task, ToolCall, VerifyResult

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"


def env_and_tasks(name: str, *overrides: str):
    """The in-process client and the tasks of `environments/<name>/config.yaml` (its data files, or the rows
    its server makes from its package when it names none)."""
    from gym_ray.collect.api import own_tasks

    env = load_config(ENVIRONMENTS / name / "config.yaml", list(overrides)).envs[name]
    return make_env_client(name, env), load_tasks(env.data) if env.data else own_tasks(name, env, None)


def verdicts(env, pairs) -> list[VerifyResult]:
    """Score (task, answer) pairs as single-answer episodes through the env client, concurrently."""

    async def one(i, task, answer):
        sid = f"s{i}"
        await env.seed_session(sid, task)
        result = await env.verify(sid, task, [*task.prompt, Message(role="assistant", content=answer)])
        await env.close_session(sid)
        return result

    async def go():
        return await asyncio.gather(*(one(i, t, a) for i, (t, a) in enumerate(pairs)))

    return asyncio.run(go())


def score(env, task: Task, answer: str | None, session_id: str = "s") -> VerifyResult:
    """One episode that ends with `answer` as the final assistant message (None: the model said nothing)."""

    async def go():
        await env.seed_session(session_id, task)
        final = [Message(role="assistant", content=answer)] if answer is not None else []
        result = await env.verify(session_id, task, [*task.prompt, *final])
        await env.close_session(session_id)
        return result

    return asyncio.run(go())


class ToolSession:
    """One scripted episode's tool calls against `env`, each recorded in `messages` as the agent would."""

    def __init__(self, env, sid: str, task: Task) -> None:
        self.env, self.sid = env, sid
        self.messages: list[Message] = [*task.prompt]

    async def call(self, name: str, **arguments) -> str:
        c = ToolCall(name=name, arguments=arguments)
        out = await self.env.call_tool(self.sid, c)
        self.messages.extend([Message(role="assistant", tool_calls=[c]),
                              Message(role="tool", tool_call_id=c.id, content=out)])
        return out


def play_all(env, runs, *, together: bool = False):
    """Step-driven episodes through the env client, each run (sid, task, actions): reset, step until done,
    verify, close. -> [(first observation, steps, verdict)]. `together`: all runs at once, else in turn."""

    async def one(sid, task, actions):
        first = await env.reset(sid, task)
        steps = []
        for action in actions:
            steps.append(await env.step(sid, action))
            if steps[-1].done:
                break
        result = await env.verify(sid, task, [])
        await env.close_session(sid)
        return first, steps, result

    async def go():
        if together:
            return await asyncio.gather(*(one(*run) for run in runs))
        return [await one(*run) for run in runs]

    return asyncio.run(go())
