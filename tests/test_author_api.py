"""The environment author's surface: `from gym_ray import ...` holds what an author needs and no hosting,
and the README's 15-line environment runs as written."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import gym_ray
import gym_ray.resources
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.types import Message, Task, ToolCall

ROOT = Path(__file__).resolve().parents[1]
HOSTING = ("make_env_client", "deploy_env", "EnvRuntime", "ProcessPool", "ProcessTimeout")


def test_author_names_come_from_the_top_level():
    from gym_ray import ResourceServer, StepResult, Task, VerifyResult, tool
    from gym_ray.resources.server import ResourceServer as server_home
    from gym_ray.resources.tools import tool as tool_home

    assert (ResourceServer, tool) == (server_home, tool_home)
    assert StepResult(observation="o", reward=1.0, done=True).done
    assert VerifyResult(reward=0.5).reward == 0.5
    assert Task(task_id="t", env="e", prompt=[{"role": "user", "content": "hi"}]).prompt[0].content == "hi"
    assert set(gym_ray.__all__) <= set(dir(gym_ray))


def test_hosting_is_not_in_the_author_namespace():
    for name in HOSTING:
        assert name not in gym_ray.__all__ and name not in gym_ray.resources.__all__
        assert name not in vars(gym_ray.resources), f"gym_ray.resources still exports {name}"
    # ...and importing gym_ray costs nothing until a name is used
    code = "import sys, gym_ray; assert 'gym_ray.resources' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_environment_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## An environment in 15 lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.startswith("from gym_ray import ResourceServer, tool\n")
    assert len(code.splitlines()) <= 15
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    env = EnvRuntime(namespace["Weather"](), "weather")
    task = Task(task_id="t", env="weather", prompt=[Message(role="user", content="Weather in Paris?")])

    async def episode():
        await env.seed_session("s", task)
        out = await env.call_tool("s", ToolCall(name="get_weather", arguments={"city": "Paris"}))
        result = await env.verify("s", task, [*task.prompt, Message(role="assistant", content=out)])
        await env.close_session("s")
        return out, result

    out, result = asyncio.run(episode())
    assert out == "The weather in Paris is sunny, 21 °C."
    assert result.reward == 1.0 and result.error is None
