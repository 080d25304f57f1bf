"""counter: state seeded from the task, changed by tools; the final count must match the task."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from gym_ray.config import load_config
from gym_ray.resources.client import make_env_client
from gym_ray.resources.runtime import SessionLostError
from gym_ray.tasks import load_tasks
from gym_ray.types import ToolCall

ENV_DIR = Path(__file__).parents[2] / "environments" / "counter"


def setup():
    cfg = load_config(ENV_DIR / "config.yaml")
    return make_env_client("counter", cfg.envs["counter"]), load_tasks(cfg.envs["counter"].data)


async def play(env, sid, task, steps):
    await env.seed_session(sid, task)
    outputs = [await env.call_tool(sid, ToolCall(name="increment", arguments={"count": s})) for s in steps]
    value = await env.call_tool(sid, ToolCall(name="get_value"))
    result = await env.verify(sid, task, [])
    await env.close_session(sid)
    return outputs, value, result


def test_right_wrong_and_malformed():
    env, tasks = setup()
    assert len(tasks) >= 5

    async def go():
        out = []
        for i, t in enumerate(tasks):
            need = t.verifier_metadata["expected_count"] - t.verifier_metadata["initial_count"]
            out.append(await play(env, f"right{i}", t, [need]))
            out.append(await play(env, f"wrong{i}", t, [need + 1]))
            out.append(await play(env, f"none{i}", t, []))
        return out

    results = asyncio.run(go())
    for i, t in enumerate(tasks):
        (outputs, value, right), (_, _, wrong), (_, _, none) = results[3 * i : 3 * i + 3]
        expected = t.verifier_metadata["expected_count"]
        assert outputs == [f"The counter is now {expected}."] and value == str(expected)
        assert right.reward == 1.0 and right.info == {"count": expected, "expected": expected}
        assert (
            wrong.reward == 0.0 and wrong.info["reason"] == f"final count {expected + 1}, expected {expected}"
        )
        assert none.reward == 0.0 and none.info["reason"] == "increment was never called"


def test_concurrent_episodes_are_isolated():
    env, tasks = setup()
    rng = random.Random(1)
    plans = [[rng.randint(-5, 5) for _ in range(rng.randint(1, 5))] for _ in range(300)]

    async def episode(i, steps):
        t = tasks[i % len(tasks)].model_copy(deep=True)
        t.verifier_metadata["expected_count"] = t.verifier_metadata["initial_count"] + sum(steps)
        await env.seed_session(f"s{i}", t)
        for s in steps:
            await env.call_tool(f"s{i}", ToolCall(name="increment", arguments={"count": s}))
            await asyncio.sleep(rng.random() / 500)
        return (await env.verify(f"s{i}", t, [])).reward

    async def go():
        return await asyncio.gather(*(episode(i, steps) for i, steps in enumerate(plans)))

    assert asyncio.run(go()) == [1.0] * len(plans)


def test_bad_arguments_and_expired_session_verify():
    env, tasks = setup()

    async def go():
        await env.seed_session("s", tasks[0])
        bad = await env.call_tool("s", ToolCall(name="increment", arguments={"count": "lots"}))
        # A stateful env cannot score a session it does not hold: the episode is re-run, never scored 0.
        with pytest.raises(SessionLostError, match="no session 'never-seeded'"):
            await env.verify("never-seeded", tasks[0], [])
        return bad

    bad = asyncio.run(go())
    assert bad.startswith("Error: invalid arguments for increment: count: Input should be a valid integer")
