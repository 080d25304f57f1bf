"""The Agent protocol: one episode in, its rollout rows out. Users plug their own in by class path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gym_ray.config import AgentConfig, SamplingConfig
from gym_ray.models.base import PolicyClient
from gym_ray.resources.client import EnvClient
from gym_ray.types import Rollout, Task


@dataclass
class EpisodeContext:
    """Everything one episode needs; built by the agent actor for each (task, rollout_index)."""

    policy: PolicyClient
    env: EnvClient
    tokenizer: Any  # a Hugging Face tokenizer with the chat template used for the whole run
    sampling: SamplingConfig
    config: AgentConfig
    rollout_id: str
    group_id: str
    rollout_index: int
    group_size: int
    session_id: str


@runtime_checkable
class Agent(Protocol):
    """Drives one episode. Returns one row per linear segment (usually exactly one)."""

    def __init__(self, config: AgentConfig) -> None: ...

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]: ...
