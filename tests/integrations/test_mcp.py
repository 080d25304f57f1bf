"""MCP tools as an environment's tools, with the real `mcp` SDK on both sides: the `mcp_units` env's
MCPServer (started by gym_ray over stdio, or by the test over Streamable HTTP), listed with the SDK's
client, offered to the model from each tool's inputSchema, called through `forward_tool`, scored by the
env's own verify; a scripted policy runs it on Ray into Parquet that passes the row checks."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import fault_helpers
import httpx
import pytest
import ray
from fault_helpers import scripted_collect
from gym_ray_env_mcp_units.mcp_server import convert_value
from ports import free_port

from gym_ray.config import EnvConfig, load_config
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import Message, ToolCall

ray.cloudpickle.register_pickle_by_value(fault_helpers)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the script reaches the agent actors by value

ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = ROOT / "environments" / "mcp_units"
_ASK = re.compile(r"Convert (\S+) (\w+) to (\w+)\.")
_RESULT = re.compile(r"= (\S+) (\w+)")


def units_reply(prompt_text: str, turn: int):
    """Turn 0: call convert with the task's quantity; then state what the tool returned."""
    if turn == 0:
        value, a, b = _ASK.findall(prompt_text)[0]
        return {"name": "convert", "arguments": {"value": float(value), "from_unit": a, "to_unit": b}}
    value, unit = _RESULT.findall(prompt_text)[-1]
    return f"That is {value} {unit}."


def env_cfg(**config) -> EnvConfig:
    cfg = load_config(ENV_DIR / "config.yaml").envs["mcp_units"]
    return cfg.model_copy(update={"config": {**cfg.config, **config}})


async def episode(env, sid, task, answer_for, arguments=None):
    """Seed, call convert (the task's quantity unless `arguments`), answer with `answer_for(output)`, verify."""
    meta = task.verifier_metadata
    call = ToolCall(name="convert", arguments=arguments or {k: meta[k] for k in ("value", "from_unit", "to_unit")})
    await env.seed_session(sid, task)
    output = await env.call_tool(sid, call)
    messages = [*task.prompt, Message(role="assistant", tool_calls=[call]),
                Message(role="tool", tool_call_id=call.id, content=output),
                Message(role="assistant", content=answer_for(output))]
    result = await env.verify(sid, task, messages)
    log = await env.call_tool(sid, ToolCall(name="session_log", arguments={}))
    await env.close_session(sid)
    return output, result, log


def test_tools_come_from_the_mcp_listing_and_the_env_scores():
    env = make_env_client("mcp_units", env_cfg())
    tasks = load_tasks(env_cfg().data)

    async def go():
        specs = await env.tools()
        out = []
        for i, t in enumerate(tasks):
            out.append(await episode(env, f"r{i}", t, lambda o: f"It is {o.split('= ')[1]}."))
            out.append(await episode(env, f"w{i}", t, lambda o: "It is 12345.6789 units."))
        await env.seed_session("bad", tasks[0])
        bad = [await env.call_tool("bad", ToolCall(name="convert", arguments=a)) for a in
               ({"value": 1, "from_unit": "parsec", "to_unit": "m"}, {"value": "x"})]
        unknown = await env.call_tool("bad", ToolCall(name="teleport", arguments={}))
        return specs, out, bad, unknown

    specs, results, (bad_unit, bad_args), unknown = asyncio.run(go())
    assert [s.name for s in specs] == ["convert", "session_log"]
    convert = specs[0]
    assert convert.description.startswith("Convert a quantity")  # the MCP tool's description
    assert set(convert.parameters["required"]) == {"value", "from_unit", "to_unit"}
    assert convert.parameters["properties"]["value"]["type"] == "number"  # its inputSchema, as the SDK lists it
    for i, t in enumerate(tasks):
        (output, right, _), (_, wrong, _) = results[2 * i: 2 * i + 2]
        m = t.verifier_metadata
        expected = convert_value(float(m["value"]), m["from_unit"], m["to_unit"])
        assert output == f"{float(m['value']):g} {m['from_unit']} = {expected:g} {m['to_unit']}"  # the server's answer
        assert right.reward == 1.0 and right.components == {"called_tool": 1.0, "value": 1.0}
        assert wrong.reward == 0.0 and wrong.components == {"called_tool": 1.0, "value": 0.0}
    assert bad_unit.startswith("Error: convert:") and "unknown unit 'parsec'" in bad_unit  # isError -> model text
    assert bad_args.startswith("Error: convert:") and "from_unit" in bad_args
    assert unknown == "Error: unknown tool 'teleport'. Available tools: convert, session_log."


def test_episode_scope_gives_each_episode_its_own_server():
    tasks = load_tasks(env_cfg().data)[:3]

    def logs(scope):
        env = make_env_client("mcp_units", env_cfg(scope=scope))

        async def go():
            return await asyncio.gather(*(episode(env, f"{scope}{i}", t, lambda o: o) for i, t in enumerate(tasks)))

        return [(output, log) for output, _, log in asyncio.run(go())]

    for output, log in logs("episode"):
        assert log == output  # only this episode's conversion: a server of its own
    shared = logs("shared")
    assert all(set(log.splitlines()) == {o for o, _ in shared} for _, log in shared)


def test_streamable_http_server_the_test_starts():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gym_ray_env_mcp_units.mcp_server", "--http", str(port)],
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        env = make_env_client("mcp_units", env_cfg(command=None, url=url))
        task = load_tasks(env_cfg().data)[1]
        output, result, _ = asyncio.run(episode(env, "h", task, lambda o: f"Roughly {o.split('= ')[1]}"))
        assert output == "12 mile = 19.3121 km" and result.reward == 1.0
    finally:
        proc.kill()
        proc.wait()


def test_bad_config_and_a_server_that_cannot_start():
    with pytest.raises(ValueError, match=r"^config: give either command .* or url"):
        asyncio.run(make_env_client("m", env_cfg(url="http://127.0.0.1:1/mcp")).tools())
    with pytest.raises(ValueError, match=r"^config.scope: 'sometimes'"):
        asyncio.run(make_env_client("m", env_cfg(scope="sometimes")).tools())
    broken = make_env_client("m", env_cfg(command="/nonexistent/mcp-server"))
    with pytest.raises(EnvError, match=r"listing its forwarded tools failed: EnvError: MCP server /nonexistent"):
        asyncio.run(broken.tools())


def test_scripted_policy_on_ray_into_parquet_that_passes_the_checks(ray_cluster, tmp_path):
    summary, rows = scripted_collect(ENV_DIR / "config.yaml", units_reply, tmp_path, "collect.num_repeats=2",
                                     "envs.mcp_units.hosting=local")
    assert summary["overall"]["rollouts"] == len(rows) == 16
    for r in rows:
        r.check_invariants()
        assert r.status.value == "ok", r.error
        assert (r.reward, r.num_tool_calls, r.num_turns) == (1.0, 1, 2)
        assert dict(zip(r.reward_component_names, r.reward_component_values, strict=True)) == {
            "called_tool": 1.0, "value": 1.0}
        prompt = json.loads(r.prompt_messages_json)
        assert prompt[-1]["role"] == "user"
