"""The two interfaces agents work through: a policy (`PolicyClient`, answering `Generation`s) and an
environment (`EnvClient`).

Ground level, so that whatever hosts a policy or an environment, and whatever calls one (agents, the
gateway, verifiers that ask a judge model, trainer adapters), depends on the interface, not on each other.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from gym_ray.config import SamplingConfig
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult


class Generation(BaseModel):
    """One model call, token-in/token-out: the generated ids exactly as sampled, with their logprobs."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length" | "abort"
    model: str = ""
    policy_version: int = 0
    text: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class PolicyClient(Protocol):
    """The way agents reach a policy, whatever hosts it (Serve handle, external HTTP, script)."""

    model_name: str

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingConfig, session_id: str | None = None
    ) -> Generation:
        """Continue `prompt_token_ids`; calls with the same `session_id` go to the same replica."""
        ...

    async def chat(
        self, messages: list[Message], tools: list[ToolSpec] | None, sampling: SamplingConfig
    ) -> dict:
        """OpenAI chat completion (response as a dict) for black-box use and judges."""
        ...

    def tokenizer_path(self) -> str:
        """Where the policy's Hugging Face tokenizer (and chat template) can be loaded from."""
        ...


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
