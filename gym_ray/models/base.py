"""What every policy returns, and the one client interface agents use to reach a policy."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from gym_ray.config import SamplingConfig
from gym_ray.types import Message, ToolSpec


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
