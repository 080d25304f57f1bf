"""verifiers (0.4, `verifiers.v1`) environments as gym_ray environments: `server: verifiers:<taskset id>`.

The taskset is loaded with verifiers' own loader (`vf.resolve_env_config` + `vf.load_environment`, as
`vf-eval` does), so any installed environment package (what the Environments Hub publishes) runs by name.
What maps to what:
- **tasks**: the taskset's `load()` (`tasks()`, when the env lists no `data` files); a task's `TaskData`
  travels in `verifier_metadata.verifiers` and is rebuilt as the taskset's own `Task` class on the env side.
- **tools**: the task's and the taskset's `Toolset`s (their `@vf.tool` methods), registered on an
  in-process `mcp` `MCPServer` as verifiers registers them, listed and called through the MCP SDK, named
  `<server>_<tool>` as verifiers' harnesses name them. Per-task toolsets are made per episode (`setup`,
  `setup_task`), taskset toolsets once. Their `State` lives in the episode: the state channel verifiers
  serves over HTTP is, here, the toolset reading the episode's state in process.
- **verifier**: the task's `score` (its `@vf.reward` / `@vf.metric` functions and plugged judges) over a
  verifiers `Trace` built from the episode's messages; the named rewards are the components, the reward is
  their weighted sum (`trace.reward`), metrics go to `info`. A reward that did not run is an env error.
- **multi-turn envs** (a package exporting its own `Env`, whose `run(task, agents)` talks to a player
  through `interaction.turn(...)`): the env-step agent drives it; the player's seat is gym_ray's policy,
  each `turn(message)` an observation, each reply a step. The env's recorded rewards plus the task's end
  the episode (reward on the last step, components in `verify`). Single-seat envs only.

verifiers' coroutines (toolset setup, tool calls, scoring, `Env.run`) all run on one loop thread per
process (`on_mcp_loop`), so an episode's `run` outlives the loop of the call that started it. Runtime-bound
rewards (ones that need a sandbox `runtime`) are skipped, as verifiers skips them when scoring offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from gym_ray import compat
from gym_ray.integrations.mcp import on_mcp_loop, result_text, tool_spec
from gym_ray.resources.runtime import EnvError
from gym_ray.resources.server import ResourceServer
from gym_ray.types import Message, StepResult, Task, ToolSpec, VerifyResult

_episode: ContextVar[_Episode | None] = ContextVar("gym_ray_vf_episode", default=None)


@dataclass
class _Episode:
    """One episode's verifiers side: its Task, trace (with the state), tool servers and, for a multi-turn
    env, the running `Env.run`, the turn it waits on and the conversation so far."""

    task: Any
    trace: Any
    history: list[Any]
    servers: dict[str, Any] = field(default_factory=dict)  # offered name -> (MCPServer, the MCP tool)
    toolsets: list[Any] = field(default_factory=list)  # this episode's own (per-task) toolsets
    run: asyncio.Task | None = None
    asks: asyncio.Queue | None = None  # what the env's turn() says (None on the first turn: the prompt)
    reply: asyncio.Future | None = None
    result: VerifyResult | None = None


class _Seat:
    """The player's seat of a multi-turn env (`agents.<seat>`): gym_ray's policy, one turn per step."""

    def __init__(self, episode: _Episode) -> None:
        self._episode = episode

    @contextlib.asynccontextmanager
    async def interaction(self, task: Any):
        yield _Interaction(self._episode)


class _Interaction:
    def __init__(self, episode: _Episode) -> None:
        self._episode = episode

    @property
    def trace(self) -> Any:
        return self._episode.trace

    async def turn(self, message: Any = None):
        """Hand `message` (the env's user turn) to gym_ray as the observation; await the player's reply."""
        import verifiers.v1 as vf

        ep = self._episode
        ep.reply = asyncio.get_running_loop().create_future()
        await ep.asks.put(message)
        text = await ep.reply
        return vf.Segment(messages=[vf.AssistantMessage(content=text)])


class _Agents:
    def __init__(self, seat: str, episode: _Episode) -> None:
        self._seat, self._player = seat, _Seat(episode)

    def __getattr__(self, name: str) -> _Seat:
        if name != self._seat:
            raise AttributeError(f"the env has one seat, {self._seat!r}; it asked for {name!r}")
        return self._player


def _load(taskset: str, taskset_args: dict[str, Any], env_args: dict[str, Any]) -> Any:
    import verifiers.v1 as vf

    try:
        return vf.load_environment(vf.resolve_env_config({**env_args, "taskset": {**taskset_args, "id": taskset}}))
    except ModuleNotFoundError as e:
        raise ValueError(f"config.taskset: verifiers environment {taskset!r} is not installed ({e})") from None


class VerifiersEnv(ResourceServer):
    """A verifiers environment (taskset + toolsets + rubric, or its own multi-turn `Env`)."""

    fork_refusal = "the episode's state lives in the verifiers package's own objects, which gym_ray cannot copy"

    verifier = "the package's rubric (its `@vf.reward` functions)"
    origin = "verifiers package"

    def __init__(self, taskset: str, taskset_args: dict[str, Any] | None = None,
                 env_args: dict[str, Any] | None = None, num_tasks: int = 256) -> None:
        import verifiers.v1 as vf

        self.taskset_id = taskset
        self.env = _load(taskset, dict(taskset_args or {}), dict(env_args or {}))
        self.num_tasks = num_tasks
        self.task_cls = type(self.env.taskset).task_type()
        seats = compat.agent_seats(self.env.config)
        if len(seats) != 1:
            raise ValueError(f"config.taskset: {taskset!r}'s env {type(self.env).__name__} has seats {seats}; "
                             "gym_ray plays one seat (the policy)")
        self.seat = seats[0]
        self.multi_turn = not isinstance(self.env, vf.SingleAgentEnv)
        self._shared: dict[str, Any] | None = None  # taskset toolsets' tools, set up once
        self._specs: list[ToolSpec] | None = None

    # --- tasks ----------------------------------------------------------------------------------
    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """The taskset's tasks as gym_ray rows (at most `limit`, else `num_tasks`: tasksets may be infinite)."""
        rows = []
        for t in self.env.taskset.take(limit or self.num_tasks):
            task_id = t.data.id or t.data.name or f"{self.taskset_id}-{t.data.idx}"
            prompt = [{"role": m.role, "content": compat.content_text(m.content) if m.content else ""} for m in _opening(t)]
            if not prompt:
                raise ValueError(f"{self.taskset_id}: task {task_id} has no prompt (gym_ray needs an opening message)")
            data = t.data.model_dump(mode="json", exclude_defaults=True)
            rows.append(Task.model_validate({"task_id": task_id, "env": env, "prompt": prompt,
                                             "verifier_metadata": {"verifiers": data}}))
        return rows

    # --- tools ------------------------------------------------------------------------------------
    async def _serve(self, toolsets: list[Any], task: Any | None) -> tuple[dict[str, Any], list[Any]]:
        """Register toolsets on in-process MCP servers as verifiers does; the tools by offered name."""
        from mcp.server.mcpserver import MCPServer

        tools: dict[str, Any] = {}
        for ts in toolsets:
            compat.serve_toolset_state(ts, _episode_state, _kept)  # in process: the episode's own State
            await ts.setup()
            if task is not None:
                await ts.setup_task(task)
            server = MCPServer(ts.server_name or type(ts).__name__)
            ts.register(server)
            for tool in await server.list_tools():
                name = f"{ts.server_name}_{tool.name}" if ts.server_name else tool.name
                if name in tools:
                    raise EnvError(f"{self.taskset_id}: two toolsets offer a tool named {name!r}")
                tools[name] = (server, tool)
        return tools, toolsets

    async def _shared_tools(self) -> dict[str, Any]:
        if self._shared is None:
            cfg = self.env.taskset.config
            self._shared, _ = await on_mcp_loop(self._serve(type(self.env.taskset).toolsets(cfg), None))
        return self._shared

    async def forwarded_tools(self) -> list[ToolSpec]:
        if self._specs is None:
            probe, probes = await on_mcp_loop(self._serve(self.task_cls.toolsets(self.env.taskset.config.task), None))
            await on_mcp_loop(_released(probes))  # per-task toolsets made only to list their tools
            tools = {**await self._shared_tools(), **probe}
            self._specs = [tool_spec(tool).model_copy(update={"name": name}) for name, (_, tool) in tools.items()]
        return self._specs

    async def forward_tool(self, name: str, arguments: dict[str, Any]) -> str:
        ep: _Episode = self.state
        found = ep.servers.get(name) or (await self._shared_tools()).get(name)
        if found is None:
            return f"Error: unknown tool {name!r}. Available tools: {', '.join(ep.servers) or 'none'}."
        server, tool = found

        try:
            result = await on_mcp_loop(_bound(ep, server.call_tool(tool.name, arguments)))
        except Exception as e:  # the MCP SDK's ToolError: bad arguments, or the tool raised (its cause)
            return f"Error: {name} failed: {e.__cause__ or e}"
        return result_text(result)

    # --- episodes ---------------------------------------------------------------------------------
    async def seed(self, task: Task) -> _Episode:
        import verifiers.v1 as vf

        data = (task.verifier_metadata or {}).get("verifiers")
        if data is None:
            raise EnvError(f"task {task.task_id}: no verifier_metadata.verifiers (rows come from the taskset)")
        vf_task = self.task_cls(self.task_cls.data_type().model_validate(data), self.env.taskset.config.task)
        trace = vf.Trace(task=vf.TraceTask(type=type(vf_task).__name__, data=vf_task.data, key=vf_task.key,
                                           hash=vf_task.hash),
                         agent=vf.AgentInfo(config=vf.AgentConfig(), name=self.seat),
                         state=compat.state_class(self.task_cls)())
        ep = _Episode(task=vf_task, trace=trace, history=_opening(vf_task))
        ep.servers, ep.toolsets = await on_mcp_loop(_bound(ep, self._serve(
            self.task_cls.toolsets(self.env.taskset.config.task), vf_task)))
        return ep

    async def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        ep: _Episode = self.state
        if self.multi_turn:
            if ep.result is not None:
                return ep.result
            failed = ep.run is not None and ep.run.done() and not ep.run.cancelled() and ep.run.exception()
            return VerifyResult(error=f"{self.taskset_id}: the env's run() " + (
                f"raised {type(failed).__name__}: {failed}" if failed else "has not finished"))
        _record(ep.trace, _vf_messages(messages))
        return await on_mcp_loop(_bound(ep, self._score(ep)))

    async def _score(self, ep: _Episode) -> VerifyResult:
        """The task's own scoring over the trace; the named rewards (the env's and the task's) as components."""
        await ep.task.score(ep.trace)
        rewards = ep.trace.rewards
        if missing := [name for name, r in rewards.items() if r is None]:
            return VerifyResult(error=f"{self.taskset_id}: rewards {missing} did not run")
        info: dict[str, Any] = {"weights": {name: r.weight for name, r in rewards.items()},
                                "metrics": {k: v for k, v in ep.trace.metrics.items() if v is not None}}
        if ep.trace.info:
            info["trace_info"] = ep.trace.info
        return VerifyResult(reward=float(ep.trace.reward), info=info,
                            components={name: float(r.score) for name, r in rewards.items()})

    async def reset(self, task: Task) -> str:
        if not self.multi_turn:
            raise EnvError(f"{self.taskset_id} is a single-agent taskset: run it with the tool-calling agent")
        ep: _Episode = self.state
        return await on_mcp_loop(_bound(ep, self._start(ep)))

    async def _start(self, ep: _Episode) -> str:
        ep.asks = asyncio.Queue()
        ep.run = asyncio.create_task(self.env.run(ep.task, _Agents(self.seat, ep)))
        said = await _next_turn(ep)
        if said is None:
            raise EnvError(f"{self.taskset_id}: the env's run() ended before the player's first turn")
        if said:
            ep.history.append(_user(said))
        return said

    async def step(self, action: str) -> StepResult:
        ep: _Episode = self.state
        return await on_mcp_loop(_bound(ep, self._step(ep, action)))

    async def _step(self, ep: _Episode, action: str) -> StepResult:
        import verifiers.v1 as vf

        reply = vf.AssistantMessage(content=action)
        _commit(ep.trace, ep.history, reply)
        ep.history.append(reply)
        ep.reply.set_result(action)
        said = await _next_turn(ep)
        if said is not None:
            ep.history.append(_user(said))
            return StepResult(observation=said)
        ep.result = await self._score(ep)
        if ep.result.error:
            raise EnvError(ep.result.error)
        return StepResult(reward=ep.result.reward, done=True, info={"components": ep.result.components})

    async def close(self) -> None:
        ep = self.state
        if isinstance(ep, _Episode):
            await on_mcp_loop(_closed(ep))


# --- the verifiers side, on the loop thread -----------------------------------------------------------
async def _bound(ep: _Episode, coro: Any) -> Any:
    """Run `coro` with `ep` as the calling episode (what the toolsets' state reads)."""
    _episode.set(ep)
    return await coro


async def _episode_state() -> Any:
    ep = _episode.get()
    if ep is None:
        raise EnvError("a verifiers tool ran outside an episode")
    return ep.trace.state


async def _kept(before: bytes) -> None:
    """The tool changed the episode's own State object in place: nothing to push."""


async def _next_turn(ep: _Episode) -> str | None:
    """The env's next user turn as text, or None once its run() returned (raising what run raised)."""
    ask = asyncio.ensure_future(ep.asks.get())
    await asyncio.wait([ask, ep.run], return_when=asyncio.FIRST_COMPLETED)
    if ask.done():
        return _text(ask.result())
    ask.cancel()
    ep.run.result()
    return None


async def _closed(ep: _Episode) -> None:
    if ep.run is not None and not ep.run.done():
        ep.run.cancel()
        await asyncio.wait([ep.run], timeout=10)
    await _released(ep.toolsets)


async def _released(toolsets: list[Any]) -> None:
    """What the toolsets' `setup` entered (their exit stacks), released."""
    for ts in toolsets:
        await compat.release_toolset(ts)


# --- messages ------------------------------------------------------------------------------------------
def _opening(task: Any) -> list[Any]:
    """A verifiers task's opening messages: its system prompt, then its prompt."""
    import verifiers.v1 as vf

    prompt = task.data.prompt
    opening = [vf.UserMessage(content=prompt)] if isinstance(prompt, str) else list(prompt or [])
    return [vf.SystemMessage(content=task.data.system_prompt), *opening] if task.data.system_prompt else opening


def _user(text: str) -> Any:
    import verifiers.v1 as vf

    return vf.UserMessage(content=text)


def _vf_messages(messages: list[Message]) -> list[Any]:
    import verifiers.v1 as vf

    out = []
    for m in messages:
        if m.role in ("system", "developer"):
            out.append(vf.SystemMessage(content=m.content))
        elif m.role == "user":
            out.append(vf.UserMessage(content=m.content))
        elif m.role == "tool":
            out.append(vf.ToolMessage(tool_call_id=m.tool_call_id or "", content=m.content, name=m.name))
        else:
            calls = [vf.ToolCall(id=c.id, name=c.name, arguments=json.dumps(c.arguments)) for c in m.tool_calls or []]
            out.append(vf.AssistantMessage(content=m.content, tool_calls=calls or None))
    return out


def _commit(trace: Any, prompt: list[Any], reply: Any) -> None:
    """One sampled turn into the trace's message graph, as verifiers' interception commits it."""
    import verifiers.v1 as vf

    compat.prepare_turn(trace, prompt).commit(vf.Response(
        id=f"turn-{len(trace.nodes)}", created=int(time.time()), model="gym_ray", message=reply,
        finish_reason="tool_calls" if reply.tool_calls else "stop"))


def _record(trace: Any, messages: list[Any]) -> None:
    """A whole transcript into the trace: each assistant message a sampled turn, trailing input after it."""
    import verifiers.v1 as vf

    for i, m in enumerate(messages):
        if isinstance(m, vf.AssistantMessage):
            _commit(trace, messages[:i], m)
    if messages and not isinstance(messages[-1], vf.AssistantMessage):
        compat.prepare_turn(trace, messages).commit_prompt()


def _text(message: Any) -> str:
    """A verifiers user turn (text or messages) as the observation's text."""
    if message is None or isinstance(message, str):
        return message or ""
    return "\n\n".join(t for m in message if (t := compat.content_text(m.content)))
