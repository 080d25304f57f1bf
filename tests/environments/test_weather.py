"""weather: the final answer must state what get_weather returned for the task's city."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gym_ray_env_weather.server import CONDITIONS, forecast

from gym_ray.config import load_config
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import Message, ToolCall

ENV_DIR = Path(__file__).parents[2] / "environments" / "weather"


def client():
    cfg = load_config(ENV_DIR / "config.yaml")
    return make_env_client("weather", cfg.envs["weather"]), cfg


async def episode(env, sid, task, answer_for):
    """Seed, call the tool for the task's city, answer with `answer_for(tool_output)`, verify."""
    await env.seed_session(sid, task)
    call = ToolCall(name="get_weather", arguments={"city": task.verifier_metadata["city"]})
    output = await env.call_tool(sid, call)
    messages = [
        *task.prompt,
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id=call.id, content=output),
    ]
    answer = answer_for(output)
    if answer is not None:
        messages.append(Message(role="assistant", content=answer))
    result = await env.verify(sid, task, messages)
    await env.close_session(sid)
    return output, result


def test_example_rows_and_config_load():
    env, cfg = client()
    tasks = load_tasks(cfg.envs["weather"].data)
    assert len(tasks) >= 5 and all(t.env == "weather" and "city" in t.verifier_metadata for t in tasks)
    specs = asyncio.run(env.tools())
    assert [s.name for s in specs] == ["get_weather"]
    assert specs[0].parameters["required"] == ["city"]


def test_right_wrong_and_malformed_answers():
    env, cfg = client()
    tasks = load_tasks(cfg.envs["weather"].data)

    async def go():
        out = []
        for i, t in enumerate(tasks):
            condition, temp = forecast(t.verifier_metadata["city"])
            other = CONDITIONS[(CONDITIONS.index(condition) + 1) % len(CONDITIONS)]
            out.append(
                await episode(env, f"r{i}", t, lambda o, c=condition, d=temp: f"It is {c} and {d} degrees.")
            )
            out.append(
                await episode(env, f"w{i}", t, lambda o, c=other, d=temp: f"It is {c} and {d} degrees.")
            )
            out.append(
                await episode(
                    env, f"t{i}", t, lambda o, c=condition, d=temp: f"It is {c} and {d + 1} degrees."
                )
            )
            out.append(await episode(env, f"m{i}", t, lambda o: None))
        return out

    results = asyncio.run(go())
    for i in range(0, len(results), 4):
        (output, right), (_, wrong_cond), (_, wrong_temp), (_, malformed) = results[i : i + 4]
        assert output.startswith("The weather in ")
        assert right.reward == 1.0 and right.components == {
            "called_tool": 1.0,
            "condition": 1.0,
            "temperature": 1.0,
        }
        assert wrong_cond.reward == 0.0 and wrong_cond.components["condition"] == 0.0
        assert wrong_temp.reward == 0.0 and wrong_temp.components["temperature"] == 0.0
        assert malformed.reward == 0.0 and malformed.info["reason"] == "no final answer"


def test_answer_without_calling_the_tool_scores_zero():
    env, cfg = client()
    t = load_tasks(cfg.envs["weather"].data)[0]
    condition, temp = forecast(t.verifier_metadata["city"])

    async def go():
        await env.seed_session("s", t)
        return await env.verify(
            "s", t, [*t.prompt, Message(role="assistant", content=f"{condition}, {temp} °C")]
        )

    result = asyncio.run(go())
    assert result.reward == 0.0 and result.components["called_tool"] == 0.0


def test_bad_arguments_come_back_as_text():
    env, cfg = client()
    t = load_tasks(cfg.envs["weather"].data)[0]

    async def go():
        await env.seed_session("s", t)
        return await env.call_tool("s", ToolCall(name="get_weather", arguments={"town": "Paris"}))

    assert (
        asyncio.run(go())
        == "Error: invalid arguments for get_weather: city: Field required; town: unexpected argument"
    )
