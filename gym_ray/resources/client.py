"""The one interface agents use to reach an environment, wherever it is hosted."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gym_ray.config import EnvConfig
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult


@runtime_checkable
class EnvClient(Protocol):
    """Session-scoped calls to one environment; every call of one episode carries its `session_id`."""

    async def tools(self) -> list[ToolSpec]: ...

    async def seed_session(self, session_id: str, task: Task) -> None:
        """A client may send the seed with the session's first call; its failure (`SeedError`) is then
        raised there."""
        ...

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        """Never raises for tool errors: bad arguments or a failing tool come back as text for the model."""
        ...

    async def reset(self, session_id: str, task: Task) -> str:
        """Step-driven environments: start the episode, return the first observation."""
        ...

    async def step(self, session_id: str, action: str) -> StepResult: ...

    async def verify(self, session_id: str, task: Task, messages: list[Message]) -> VerifyResult:
        """An episode's last call before `close_session` (as NeMo Gym's `/verify` ends its episode): a client
        may free the session with it."""
        ...

    async def close_session(self, session_id: str) -> None:
        """Always follows an episode's calls, verified or not."""
        ...


def make_env_client(name: str, cfg: EnvConfig, app_name: str | None = None) -> EnvClient:
    """A client for environment `name`: through its Serve app if `app_name` is given, else in-process.

    `app_name` is what `deploy_env` returned. Both clients are picklable and usable inside Ray actors.
    """
    if app_name is None:
        from gym_ray.resources.local import LocalEnvClient

        return LocalEnvClient(name, cfg)
    from gym_ray.resources.serve import HandleEnvClient, is_sticky

    return HandleEnvClient(app_name, sticky=is_sticky(cfg))
