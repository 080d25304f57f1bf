"""An MCP server's tools as a gym_ray environment's tools (the real `mcp` SDK client).

The env lists the server's tools (`tools/list`) and offers them to the model, each MCP tool's
`inputSchema` as the function's parameters; the model's calls go through `forward_tool` to `tools/call`.
Scoring stays the environment's own: subclass `MCPEnv` and override `verify` or `score` (the MCP server
only serves tools).

Where the server runs (`envs.<name>.config`):
- `command` (+ `args`, `env`, `cwd`): a stdio server gym_ray starts (`python` means this interpreter); `scope: shared` (default) starts one
  per env instance (replica / agent actor) on first use, `scope: episode` one per episode, started in
  `seed` and stopped at `close_session`, for servers that keep state;
- `url`: a Streamable HTTP server someone else runs (always shared).

The MCP client sessions live on one event loop thread of their own (per process), so they survive the
hosting runtime moving an env to a fresh loop, and anyio's task groups stay in the task that opened them.
A tool that answers `isError` (or a call the server rejects as invalid) is text for the model; a server
that cannot be started or reached is an `EnvError` (env_error).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shlex
import sys
import threading
from collections.abc import Coroutine
from typing import Any, Literal

from gym_ray.background import BackgroundLoop
from gym_ray.resources.runtime import EnvError
from gym_ray.resources.server import ResourceServer
from gym_ray.types import Task, ToolSpec

_loop: BackgroundLoop | None = None
_loop_lock = threading.Lock()


def _mcp_loop() -> BackgroundLoop:
    """The process's MCP loop thread, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.closed:
            _loop = BackgroundLoop("gym_ray-mcp")
        return _loop


async def on_mcp_loop(coro: Coroutine) -> Any:
    """Await `coro` on the process's own integration loop thread (MCP sessions here, OpenEnv clients, verifiers episodes in
    `gym_ray.integrations.verifiers`): it outlives the loop of whichever caller started it."""
    return await _mcp_loop().call(coro)


class MCPConnection:
    """One open MCP client session, held by a task on the MCP loop until `close`."""

    def __init__(self, server: Any, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.client: Any = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def _open(self) -> None:
        from mcp import Client

        ready, self._stop = asyncio.Event(), asyncio.Event()
        failure: list[BaseException] = []

        async def hold() -> None:
            try:
                async with Client(self.server, read_timeout_seconds=self.timeout_s) as client:
                    self.client = client
                    ready.set()
                    await self._stop.wait()
            except BaseException as e:  # noqa: BLE001 - reported to the opener, or dropped at close
                failure.append(e)
            finally:
                ready.set()

        self._task = asyncio.create_task(hold())
        await asyncio.wait_for(ready.wait(), self.timeout_s)
        if self.client is None:
            raise EnvError(f"MCP server {self._where()}: cannot connect: {_describe(failure[0]) if failure else '?'}")

    async def _close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)

    def _where(self) -> str:
        return self.server if isinstance(self.server, str) else " ".join([self.server.command, *self.server.args])

    async def opened(self) -> MCPConnection:
        await self._open()
        return self

    async def open(self) -> MCPConnection:
        return await on_mcp_loop(self.opened())

    async def close(self) -> None:
        await on_mcp_loop(self._close())

    async def list_tools(self) -> list[Any]:
        async def go():
            tools, cursor = [], None
            while True:
                page = await self.client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools

        return await on_mcp_loop(go())

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        return await on_mcp_loop(self.client.call_tool(name, arguments))


def _describe(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:  # anyio wraps the transport's failure
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


def tool_spec(tool: Any) -> ToolSpec:
    """An MCP tool as the function the model is offered: its inputSchema is already JSON schema."""
    schema = dict(tool.input_schema or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return ToolSpec(name=tool.name, description=tool.description or tool.title or "", parameters=schema)


def result_text(result: Any) -> str:
    """A `CallToolResult` as text for the model: its text blocks, other blocks as JSON; else the
    structured content."""
    parts = [block.text if getattr(block, "type", None) == "text" else
             json.dumps(block.model_dump(mode="json", exclude_none=True)) for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content)]
    return "\n".join(parts)


class MCPEnv(ResourceServer):
    """Tools from an MCP server; subclass it for the verifier."""

    fork_refusal = "the episode's state lives in the MCP server (a subprocess or a URL), which has no fork"

    def __init__(self, command: str | list[str] | None = None, args: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None, url: str | None = None,
                 scope: Literal["shared", "episode"] = "shared", timeout_s: float = 60.0) -> None:
        from mcp import StdioServerParameters

        if bool(command) == bool(url):
            raise ValueError("config: give either command (a stdio MCP server gym_ray starts) or url (an HTTP one)")
        if scope not in ("shared", "episode"):
            raise ValueError(f"config.scope: {scope!r}; expected 'shared' or 'episode'")
        if url and scope == "episode":
            raise ValueError("config.scope: 'episode' needs a command (gym_ray cannot start a server at a url)")
        if command:
            argv = shlex.split(command) if isinstance(command, str) else list(command)
            if argv[0] == "python":  # this interpreter, so the server sees the same packages
                argv[0] = sys.executable
            self.server: Any = StdioServerParameters(command=argv[0], args=[*argv[1:], *(args or [])],
                                                     env=env, cwd=cwd)
        else:
            self.server = url
        self.scope = scope
        self.timeout_s = timeout_s
        self._shared: concurrent.futures.Future | None = None
        self._shared_lock = threading.Lock()  # callers may sit on different loops: no asyncio.Lock
        self._specs: list[ToolSpec] | None = None

    async def _shared_connection(self) -> MCPConnection:
        with self._shared_lock:
            if self._shared is None or (self._shared.done() and self._shared.exception() is not None):
                connection = MCPConnection(self.server, self.timeout_s)
                self._shared = _mcp_loop().submit(connection.opened())
            shared = self._shared
        return await asyncio.wrap_future(shared)

    async def _connection(self) -> MCPConnection:
        if self.scope == "episode":
            return self.state["mcp"]
        return await self._shared_connection()

    async def forwarded_tools(self) -> list[ToolSpec]:
        if self._specs is None:
            if self.scope == "episode":  # list once from a server of its own, then stop it
                probe = await MCPConnection(self.server, self.timeout_s).open()
                try:
                    tools = await probe.list_tools()
                finally:
                    await probe.close()
            else:
                tools = await (await self._shared_connection()).list_tools()
            self._specs = [tool_spec(t) for t in tools]
        return self._specs

    async def seed(self, task: Task) -> dict:
        if self.scope == "episode":
            return {"mcp": await MCPConnection(self.server, self.timeout_s).open()}
        return {}

    async def forward_tool(self, name: str, arguments: dict[str, Any]) -> str:
        from mcp import MCPError

        offered = [t.name for t in await self.forwarded_tools()]
        if name not in offered:
            return f"Error: unknown tool {name!r}. Available tools: {', '.join(offered) or 'none'}."
        connection = await self._connection()
        try:
            result = await connection.call_tool(name, arguments)
        except MCPError as e:  # the server rejected the call (bad arguments): the model's mistake
            return f"Error: {name}: {e}"
        except Exception as e:
            raise EnvError(f"MCP tool {name}: {_describe(e)}") from e
        text = result_text(result)
        return f"Error: {name}: {text}" if result.is_error else text

    async def close(self) -> None:
        state = self.state if isinstance(self.state, dict) else {}
        connection = state.pop("mcp", None)
        if connection is not None:
            await connection.close()
