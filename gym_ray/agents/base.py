"""The Agent protocol: one episode in, its rollout rows out. Users plug their own in by class path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gym_ray.agents.tokenizer import ChatTokenizer, as_chat_tokenizer, load_tokenizer, tokenizer_fingerprint
from gym_ray.config import AgentConfig, SamplingConfig
from gym_ray.models.base import PolicyClient
from gym_ray.resources.client import EnvClient
from gym_ray.types import Rollout, Task

__all__ = [
    "Agent", "ChatTokenizer", "EpisodeContext", "InfraError", "as_chat_tokenizer", "is_infra_error",
    "load_tokenizer", "tokenizer_fingerprint",
]


class InfraError(RuntimeError):
    """The machinery failed (a dead actor or replica), not the model or the environment: the collector may
    retry the episode. Model mistakes and environment errors never raise; they become rows with a status."""


def is_infra_error(e: BaseException) -> bool:
    """Ray's actor/node/object failures and Serve's unavailability, wherever they surface."""
    if isinstance(e, InfraError):
        return True
    import ray.exceptions as rex

    infra: tuple[type[BaseException], ...] = (
        rex.RayActorError, rex.ActorUnavailableError, rex.ObjectLostError, rex.WorkerCrashedError, rex.NodeDiedError,
    )
    try:
        from ray.serve import exceptions as sex

        infra += tuple(t for n in ("BackPressureError", "DeploymentUnavailableError") if (t := getattr(sex, n, None)))
    except ImportError:
        pass
    return isinstance(e, infra)


@dataclass
class EpisodeContext:
    """Everything one episode needs; built by the agent actor for each (task, rollout_index).

    `tokenizer` is the run's `ChatTokenizer` (from `load_tokenizer(path, chat_template)`); a bare Hugging Face
    tokenizer is accepted too and wrapped once with its own chat template.
    """

    policy: PolicyClient
    env: EnvClient
    tokenizer: ChatTokenizer | Any
    sampling: SamplingConfig
    config: AgentConfig
    rollout_id: str
    group_id: str
    rollout_index: int
    group_size: int
    session_id: str

    @property
    def chat(self) -> ChatTokenizer:
        return as_chat_tokenizer(self.tokenizer)


@runtime_checkable
class Agent(Protocol):
    """Drives one episode. Returns one row per linear segment (usually exactly one).

    Contract: never raises for model or environment failures (they become rows with a status); raises
    `InfraError` for infrastructure failures so the collector can retry; lets `asyncio.CancelledError`
    through (the collector's episode timeout).
    """

    def __init__(self, config: AgentConfig) -> None: ...

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]: ...
