"""The in-process client: the environment instance lives inside the caller (e.g. the agent actor).

Zero hops per call, for pure-Python environments on the hot path. The client pickles as its config
and builds the environment on first use, so it can be made on the driver and sent to an actor.
"""

from __future__ import annotations

from gym_ray.config import EnvConfig
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult


class LocalEnvClient:
    def __init__(self, name: str, cfg: EnvConfig) -> None:
        self.name = name
        self.cfg = cfg
        self._runtime: EnvRuntime | None = None

    @property
    def runtime(self) -> EnvRuntime:
        if self._runtime is None:
            self._runtime = EnvRuntime.from_config(self.name, self.cfg)
        return self._runtime

    def __getstate__(self) -> dict:
        return {"name": self.name, "cfg": self.cfg, "_runtime": None}

    async def tools(self) -> list[ToolSpec]:
        return await self.runtime.tools()

    async def seed_session(self, session_id: str, task: Task) -> None:
        await self.runtime.seed_session(session_id, task)

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        return await self.runtime.call_tool(session_id, call)

    async def reset(self, session_id: str, task: Task) -> str:
        return await self.runtime.reset(session_id, task)

    async def step(self, session_id: str, action: str) -> StepResult:
        return await self.runtime.step(session_id, action)

    async def verify(self, session_id: str, task: Task, messages: list[Message]) -> VerifyResult:
        return await self.runtime.verify(session_id, task, messages)

    async def close_session(self, session_id: str) -> None:
        await self.runtime.close_session(session_id)
