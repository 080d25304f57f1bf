"""verifiers 0.4 environments under gym_ray, with the real `verifiers` package: the shipped environment
packages (`gym-ray-vf-units`: taskset + toolset + rubric; `gym-ray-vf-guess`: a multi-turn `Env.run`)
loaded by name with verifiers' own loader, their tools listed and called through the MCP SDK as verifiers
registers them, scored by the task's own `score`; then both on Ray into Parquet that passes the row checks."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import fault_helpers
import pytest
import ray
from fault_helpers import scripted_collect

from gym_ray.collect.api import load_run_tasks
from gym_ray.config import EnvConfig, load_config
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.types import Message, ToolCall

ray.cloudpickle.register_pickle_by_value(fault_helpers)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "environments" / "vf_units" / "config.yaml"
GUESS = ROOT / "environments" / "vf_guess" / "config.yaml"
_ASK = re.compile(r"Convert (\S+) (\w+) to (\w+)\.")
_RESULT = re.compile(r"= (\S+) (\w+)")
_TURN = re.compile(r"<\|im_start\|>(assistant|user)\n(.*?)<\|im_end\|>", re.S)


def units_reply(prompt_text: str, turn: int):
    """Turn 0: call convert with the task's quantity; then state what the tool returned."""
    if turn == 0:
        value, a, b = _ASK.findall(prompt_text)[-1]
        return {"name": "convert", "arguments": {"value": float(value), "from_unit": a, "to_unit": b}}
    value, unit = _RESULT.findall(prompt_text)[-1]
    return f"That is {value} {unit}."


def binary_search_reply(prompt_text: str, turn: int) -> str:
    """Guess by halving 1..32 from the env's Higher./Lower. answers in the transcript."""
    lo, hi, guess = 1, 32, None
    for role, text in _TURN.findall(prompt_text):
        if role == "assistant":
            guess = int(text.strip())
        elif guess is not None:
            lo, hi = (guess + 1, hi) if text.startswith("Higher") else (lo, guess - 1)
    return str((lo + hi) // 2)


def units_episode(env, sid, task, answer_for):
    data = task.verifier_metadata["verifiers"]

    async def go():
        call = ToolCall(name="convert", arguments={k: data[k] for k in ("value", "from_unit", "to_unit")})
        await env.seed_session(sid, task)
        output = await env.call_tool(sid, call)
        messages = [*task.prompt, Message(role="assistant", tool_calls=[call]),
                    Message(role="tool", tool_call_id=call.id, content=output),
                    Message(role="assistant", content=answer_for(output))]
        result = await env.verify(sid, task, messages)
        await env.close_session(sid)
        return output, result

    return go()


def test_taskset_tools_and_rubric_by_name():
    cfg = load_config(UNITS)
    tasks = load_run_tasks(cfg)
    env = make_env_client("vf_units", cfg.envs["vf_units"])
    assert cfg.envs["vf_units"].server == "gym_ray.integrations.verifiers:VerifiersEnv"
    assert len(tasks) == 36 and len({t.task_id for t in tasks}) == 36  # the taskset's load(), by name
    assert [m.role for m in tasks[0].prompt] == ["system", "user"]
    assert tasks[0].prompt[1].content == "Convert 1.5 inch to cm."

    async def go():
        specs = await env.tools()
        # interleaved episodes: each toolset's State is its episode's own
        both = await asyncio.gather(*(units_episode(env, f"r{i}", t, lambda o: f"It is {o.split('= ')[1]}.")
                                      for i, t in enumerate(tasks[:6])))
        wrong = await units_episode(env, "w", tasks[1], lambda o: "It is 12345.")
        await env.seed_session("bad", tasks[0])
        bad = await env.call_tool("bad", ToolCall(name="convert", arguments={"value": 1, "from_unit": "x",
                                                                             "to_unit": "y"}))
        no_tool = await env.verify("bad", tasks[0], [*tasks[0].prompt, Message(role="assistant", content="3.81")])
        return specs, both, wrong, bad, no_tool

    specs, right, (_, wrong), bad, no_tool = asyncio.run(go())
    assert [s.name for s in specs] == ["convert"]  # the toolset's @vf.tool, schema from the MCP SDK
    assert specs[0].parameters["properties"]["value"]["type"] == "number"
    assert specs[0].description.startswith("Convert a quantity")
    for (output, result), t in zip(right, tasks, strict=False):
        d = t.verifier_metadata["verifiers"]
        assert output.startswith(f"{d['value']:g} {d['from_unit']} = ")
        assert result.reward == pytest.approx(1.0) and result.components == {"correct": 1.0, "used_tool": 1.0}
        assert result.info["weights"] == {"correct": 0.8, "used_tool": 0.2}
        assert result.info["metrics"] == {"tool_calls": 1.0}
    assert wrong.reward == pytest.approx(0.2) and wrong.components == {"correct": 0.0, "used_tool": 1.0}
    assert bad == "Error: convert failed: cannot convert x to y"  # the tool's own error, as text for the model
    # the right number without the tool: only `correct` (0.8), and used_tool reads this episode's empty state
    assert no_tool.reward == pytest.approx(0.8) and no_tool.components == {"correct": 1.0, "used_tool": 0.0}


def test_multi_turn_env_run_through_step():
    cfg = load_config(GUESS)
    tasks = load_run_tasks(cfg)
    assert len(tasks) == 16
    env = make_env_client("vf_guess", cfg.envs["vf_guess"])

    async def play(sid, task, guesses):
        obs = [await env.reset(sid, task)]
        steps = []
        for g in guesses:
            r = await env.step(sid, str(g))
            steps.append(r)
            if r.done:
                break
        result = await env.verify(sid, task, [])
        await env.close_session(sid)
        return obs, steps, result

    secret = tasks[0].verifier_metadata["verifiers"]["secret"]
    lo, hi, path = 1, 32, []
    while True:
        path.append((lo + hi) // 2)
        if path[-1] == secret:
            break
        lo, hi = (path[-1] + 1, hi) if path[-1] < secret else (lo, path[-1] - 1)
    obs, steps, result = asyncio.run(play("win", tasks[0], path))
    assert obs == [""]  # the first turn is the task's prompt
    assert [s.observation for s in steps[:-1]] == ["Higher." if g < secret else "Lower." for g in path[:-1]]
    assert steps[-1].done and steps[-1].reward == 1.0 and all(s.reward == 0 for s in steps[:-1])
    assert result.components == {"solved": 1.0, "efficiency": pytest.approx(1 / len(path))}
    assert result.info["metrics"] == {"guesses": float(len(path))}

    wrong = 1 if secret != 1 else 2
    _, steps, lost = asyncio.run(play("lose", tasks[0], [wrong] * 20))
    assert len(steps) == 8 and steps[-1].done  # the env's max_guesses, not gym_ray's turn cap
    assert lost.reward == 0.0 and lost.components["solved"] == 0.0

    single = make_env_client("vf_units", load_config(UNITS).envs["vf_units"])
    with pytest.raises(EnvError, match="single-agent taskset: run it with the tool-calling agent"):
        asyncio.run(single.reset("x", load_run_tasks(load_config(UNITS))[0]))


def test_an_env_run_that_raises_is_an_env_error_not_a_reward():
    cfg = EnvConfig.model_validate({"server": "verifiers:gym_ray_vf_broken", "agent": {
        "cls": "gym_ray.agents.env_step:EnvStepAgent"}})
    env = make_env_client("broken", cfg)
    (task,) = load_run_tasks(load_config(UNITS, ["envs.vf_units.server=verifiers:gym_ray_vf_broken"]))

    async def go():
        assert await env.reset("b", task) == ""
        with pytest.raises(EnvError, match="step failed: RuntimeError: the game engine crashed"):
            await env.step("b", "hello")
        result = await env.verify("b", task, [])
        await env.close_session("b")
        return result

    result = asyncio.run(go())
    assert result.error.endswith("run() raised RuntimeError: the game engine crashed")  # never a reward of 0


def test_a_name_that_is_not_installed_is_a_one_line_error():
    cfg = load_config(UNITS, ["envs.vf_units.server=verifiers:no-such-env"])
    with pytest.raises(ValueError, match=r"^envs.vf_units: its own tasks: config.taskset: verifiers environment "
                                         r"'no-such-env' is not installed"):
        load_run_tasks(cfg)
    with pytest.raises(ValueError, match="server 'verifiers:' names no environment"):
        EnvConfig.model_validate({"server": "verifiers: "})


@pytest.mark.parametrize("config, script, expected", [
    (UNITS, units_reply, {"correct": 1.0, "used_tool": 1.0}),
    (GUESS, binary_search_reply, None),
], ids=["vf_units", "vf_guess"])
def test_scripted_policy_on_ray_into_parquet_that_passes_the_checks(ray_cluster, tmp_path, config, script, expected):
    summary, rows = scripted_collect(config, script, tmp_path, "collect.num_repeats=2", "collect.limit=6")
    assert summary["overall"]["rollouts"] == len(rows) == 12
    for r in rows:
        r.check_invariants()
        assert r.status.value == "ok", r.error
        assert r.reward == pytest.approx(1.0)
        components = dict(zip(r.reward_component_names, r.reward_component_values, strict=True))
        if expected:
            assert components == expected and r.num_tool_calls == 1
        else:
            assert components["solved"] == 1.0 and r.num_turns == len(r.turn_rewards) >= 2
