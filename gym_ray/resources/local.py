"""The in-process client: the environment instance lives inside the caller (e.g. the agent actor).

No hop to another process per call, for pure-Python environments on the hot path. The environment's
code runs on its own event loop thread (`EnvLoop`), not on the caller's: an environment that blocks
costs its own calls only, and the caller's timeouts hold. The client pickles as its config and builds
the environment on first use (or `build()`), so it can be made on the driver and sent to an actor.
"""

from __future__ import annotations

from gym_ray.config import EnvConfig
from gym_ray.resources.isolation import EnvLoop
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.resources.server import ResourceServer
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult


class LocalEnvClient:
    def __init__(self, name: str, cfg: EnvConfig | None = None, server: ResourceServer | None = None) -> None:
        if (cfg is None) == (server is None):
            raise ValueError("LocalEnvClient: give exactly one of cfg (built where used) or server (an instance)")
        self.name = name
        self.cfg = cfg
        self.server = server
        self._runtime: EnvRuntime | None = None
        self._loop: EnvLoop | None = None

    @classmethod
    def of(cls, server: ResourceServer, name: str | None = None) -> LocalEnvClient:
        """A client over an existing instance (pickled with it), e.g. `Collector(envs={"x": LocalEnvClient.of(X())})`."""
        return cls(name or type(server).__name__, server=server)

    def build(self) -> EnvRuntime:
        """Construct the environment now (an agent actor does at start, so a bad config fails it)."""
        if self._runtime is None:
            if self.server is not None:
                self._runtime = EnvRuntime(self.server, self.name)
            else:
                self._runtime = EnvRuntime.from_config(self.name, self.cfg)
            self._loop = EnvLoop(self.name)
        return self._runtime

    @property
    def runtime(self) -> EnvRuntime:
        return self.build()

    def __getstate__(self) -> dict:
        return {"name": self.name, "cfg": self.cfg, "server": self.server, "_runtime": None, "_loop": None}

    async def _on_env_loop(self, method: str, *args):
        rt = self.build()
        return await self._loop.call(lambda: getattr(rt, method)(*args))

    async def tools(self) -> list[ToolSpec]:
        return await self.runtime.tools()

    async def seed_session(self, session_id: str, task: Task) -> None:
        await self._on_env_loop("seed_session", session_id, task)

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        return await self._on_env_loop("call_tool", session_id, call)

    async def reset(self, session_id: str, task: Task) -> str:
        return await self._on_env_loop("reset", session_id, task)

    async def step(self, session_id: str, action: str) -> StepResult:
        return await self._on_env_loop("step", session_id, action)

    async def verify(self, session_id: str, task: Task, messages: list[Message]) -> VerifyResult:
        return await self._on_env_loop("verify", session_id, task, messages)

    async def fork_session(self, session_id: str, new_session_ids: list[str]) -> None:
        await self._on_env_loop("fork_session", session_id, list(new_session_ids))

    async def close_session(self, session_id: str) -> None:
        await self._on_env_loop("close_session", session_id)
