"""Forking a live episode's session (tree rollouts): each fork is independent of its siblings and of the
parent, in-process and on Serve (where forks stay on the parent's replica); the sandbox env forks its files;
environments whose state gym_ray does not own are refused in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ray import serve

from gym_ray import ResourceServer, tool
from gym_ray.config import EnvConfig, load_config
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.resources.local import LocalEnvClient
from gym_ray.resources.runtime import SessionLostError, check_forkable
from gym_ray.resources.serve import deploy_env
from gym_ray.types import Message, Task, ToolCall

ROOT = Path(__file__).parents[1]


def env_cfg(name: str) -> EnvConfig:
    return load_config(ROOT / "environments" / name / "config.yaml").envs[name]


def counter_task(task_id: str, expected: int) -> Task:
    return Task(task_id=task_id, env="counter", prompt=[Message(role="user", content="count")],
                verifier_metadata={"initial_count": 0, "expected_count": expected})


async def add(env, sid: str, n: int) -> str:
    return await env.call_tool(sid, ToolCall(name="increment", arguments={"count": n}))


async def value(env, sid: str) -> str:
    return await env.call_tool(sid, ToolCall(name="get_value", arguments={}))


def test_in_process_forks_diverge_and_the_parent_is_untouched():
    env = make_env_client("counter", env_cfg("counter"))
    task = counter_task("t", expected=3)

    async def go():
        await env.seed_session("p", task)
        await add(env, "p", 2)
        await env.fork_session("p", ["p.0", "p.1"])
        sessions_after_fork = len(env.runtime.sessions)
        await add(env, "p.0", 1)
        await add(env, "p.1", 5)
        values = [await value(env, s) for s in ("p", "p.0", "p.1")]
        rewards = [(await env.verify(s, task, [])).reward for s in ("p", "p.0", "p.1")]
        for s in ("p", "p.0", "p.1"):
            await env.close_session(s)
        return sessions_after_fork, values, rewards

    sessions_after_fork, values, rewards = asyncio.run(go())
    assert sessions_after_fork == 3  # forks are sessions of their own
    assert values == ["2", "3", "7"]
    assert rewards == [0.0, 1.0, 0.0]
    assert len(env.runtime.sessions) == 0


def test_swe_lite_forks_its_files():
    """A fix in one branch is invisible to its sibling and the parent; each branch's tests run on its own
    files in the sandbox."""
    cfg = load_config(ROOT / "environments" / "swe_lite" / "config.yaml")
    env = make_env_client("swe_lite", cfg.envs["swe_lite"])
    from gym_ray.tasks import load_tasks

    task = load_tasks(cfg.envs["swe_lite"].data)[0]
    fix = task.verifier_metadata["reference_fix"]
    original = task.verifier_metadata["files"][fix["path"]]

    async def go():
        await env.seed_session("p", task)
        await env.fork_session("p", ["fixed", "other"])
        edited = await env.call_tool("fixed", ToolCall(name="edit_file", arguments=fix))
        read = {s: await env.call_tool(s, ToolCall(name="read_file", arguments={"path": fix["path"]}))
                for s in ("p", "fixed", "other")}
        ran = await env.call_tool("other", ToolCall(name="run", arguments={"command": "python3 -m unittest"}))
        results = {s: await env.verify(s, task, []) for s in ("p", "fixed", "other")}
        for s in results:
            await env.close_session(s)
        return edited, read, ran, results

    edited, read, ran, results = asyncio.run(go())
    assert edited.startswith("Edited")
    assert read["p"] == read["other"] == original != read["fixed"]
    assert ran.startswith("exit code 1") and "FAILED" in ran  # the sibling still has the bug
    assert results["fixed"].reward == 1.0, results["fixed"].info
    assert results["other"].reward == 0.0 and results["p"].reward == 0.0
    assert results["other"].components["edited"] == 0.0


class Handles(ResourceServer):
    """State with a part a deep copy must not duplicate (a shared handle): the fork hook decides."""

    def __init__(self) -> None:
        self.shared = object()
        self.fail_forks = False

    def seed(self, task):
        return {"log": [], "handle": self.shared, "parent": None}

    def fork(self, state):
        if self.fail_forks:
            raise OSError("snapshot refused")
        return {"log": list(state["log"]), "handle": state["handle"], "parent": self.session_id}

    @tool
    def note(self, text: str) -> str:
        """Log a line."""
        self.state["log"].append(text)
        return " ".join(self.state["log"])

    def verify(self, task, messages):
        return 1.0


def test_a_fork_hook_a_failing_fork_and_a_missing_parent():
    server = Handles()
    env = LocalEnvClient.of(server)
    task = Task(task_id="h", env="handles", prompt=[Message(role="user", content="go")])

    async def go():
        await env.seed_session("p", task)
        await env.call_tool("p", ToolCall(name="note", arguments={"text": "a"}))
        await env.fork_session("p", ["c"])
        child = env.runtime.sessions.get("c").state
        logged = await env.call_tool("c", ToolCall(name="note", arguments={"text": "b"}))
        parent_log = await env.call_tool("p", ToolCall(name="note", arguments={"text": "x"}))
        server.fail_forks = True
        with pytest.raises(EnvError, match="fork of session 'p' failed: OSError: snapshot refused"):
            await env.fork_session("p", ["d"])
        with pytest.raises(SessionLostError, match="no session 'gone'"):
            await env.fork_session("gone", ["e"])
        return child, logged, parent_log

    child, logged, parent_log = asyncio.run(go())
    assert child["handle"] is server.shared and child["parent"] == "p"
    assert logged == "a b" and parent_log == "a x"
    assert "d" not in env.runtime.sessions and "e" not in env.runtime.sessions


@pytest.mark.parametrize("server, names", [
    ("gym_ray.integrations.nemo_gym.bridge:NemoGymResources", "NeMo Gym"),
    ("gym_ray.integrations.openenv:OpenEnvEnv", "OpenEnv"),
    ("gym_ray.integrations.mcp:MCPEnv", "MCP"),
    ("gym_ray.integrations.verifiers:VerifiersEnv", "verifiers"),
])
def test_environments_whose_state_gym_ray_does_not_own_are_refused_in_one_line(server, names):
    with pytest.raises(ValueError) as e:
        check_forkable("x", EnvConfig(server=server))
    message = str(e.value)
    assert "\n" not in message and message.startswith("envs.x: collect.tree needs forkable episodes")
    assert server in message and names in message


def test_forkable_environments_pass_the_check():
    for name in ("counter", "swe_lite", "code", "weather"):
        check_forkable(name, env_cfg(name))


def test_forks_on_serve_stay_on_the_parents_replica(serve_http_port):
    """Two replicas: every fork's calls reach the replica holding its parent (a fork elsewhere would be a
    lost session), including forks of a parent whose seed has not been sent yet."""
    cfg = env_cfg("counter").model_copy(update={"num_replicas": 2})
    app = deploy_env("counter_fork", cfg, route_prefix="/counter_fork")
    client = make_env_client("counter_fork", cfg, app_name=app)
    assert client.sticky
    tasks = [counter_task(f"t{i}", expected=i % 3 + 1) for i in range(24)]

    async def tree(t: Task, played: bool) -> list[tuple[str, float]]:
        p = t.task_id
        await client.seed_session(p, t)
        if played:
            await add(client, p, 1)
        await client.fork_session(p, [f"{p}.0", f"{p}.1"])
        await add(client, f"{p}.0", 1)
        await add(client, f"{p}.1", 2)
        out = []
        for s in (p, f"{p}.0", f"{p}.1"):
            out.append((await value(client, s), (await client.verify(s, t, [])).reward))
            await client.close_session(s)
        return out

    async def go():
        return await asyncio.gather(*(tree(t, played=i % 2 == 0) for i, t in enumerate(tasks)))

    try:
        for i, (t, got) in enumerate(zip(tasks, asyncio.run(go()), strict=True)):
            base = 1 if i % 2 == 0 else 0
            expected = t.verifier_metadata["expected_count"]
            values = [base, base + 1, base + 2]
            rewards = [float(v == expected) for v in values]
            assert got == [(str(v), r) for v, r in zip(values, rewards, strict=True)], t.task_id
    finally:
        serve.delete(app)
