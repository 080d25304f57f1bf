"""The Agent protocol: one episode in, its rollout rows out. Users plug their own in by class path."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gym_ray.agents.tokenizer import ChatTokenizer, as_chat_tokenizer, load_tokenizer, tokenizer_fingerprint
from gym_ray.clients import EnvClient, PolicyClient
from gym_ray.config import AgentConfig, SamplingConfig
from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage
from gym_ray.resources.runtime import SessionLostError
from gym_ray.types import Rollout, Task

__all__ = [
    "Agent", "AgentOptions", "ChatTokenizer", "EpisodeContext", "InfraError", "agent_options", "as_chat_tokenizer",
    "infra_error_types", "infra_failure", "is_infra_error", "load_tokenizer", "tokenizer_fingerprint",
]


class InfraError(RuntimeError):
    """The machinery failed (a dead actor or replica, a lost session), not the model or the environment:
    the collector retries the episode. Model mistakes and environment errors never raise; they become rows
    with a status. `failure` says where and how, for the row written when the retries run out."""

    def __init__(self, message: str, failure: Failure | None = None):
        super().__init__(message)
        self.failure = failure


@cache
def _peer_lost_types() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (rex.RayActorError, rex.ObjectLostError, rex.WorkerCrashedError, rex.NodeDiedError)


@cache
def _unavailable_types() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    types: list[type[BaseException]] = [rex.ActorUnavailableError]
    try:
        from ray.serve import exceptions as sex

        types += [t for n in ("BackPressureError", "DeploymentUnavailableError") if (t := getattr(sex, n, None))]
    except ImportError:
        pass
    return tuple(types)


@cache
def infra_error_types() -> tuple[type[BaseException], ...]:
    """Failures of the machinery, not of the model or environment: the episode is retried on these."""
    return (InfraError, SessionLostError, *_peer_lost_types(), *_unavailable_types())


def is_infra_error(e: BaseException) -> bool:
    """Ray's actor/node/object failures, Serve's unavailability and lost sessions, wherever they surface."""
    return isinstance(e, infra_error_types())


def infra_failure(e: BaseException, stage: FailureStage) -> Failure:
    """The failure record of an infrastructure error raised at `stage`."""
    if isinstance(e, InfraError) and e.failure is not None:
        return e.failure
    if isinstance(e, SessionLostError):
        return Failure(stage=stage, kind=FailureKind.SESSION_LOST, delivery=Delivery.DELIVERED)
    if isinstance(e, _unavailable_types()):
        # ActorUnavailableError may come after the call was sent; Serve's back pressure before.
        sent = Delivery.POSSIBLY_DELIVERED if "Actor" in type(e).__name__ else Delivery.NOT_SENT
        return Failure(stage=stage, kind=FailureKind.UNAVAILABLE, delivery=sent)
    return Failure(stage=stage, kind=FailureKind.PEER_LOST, delivery=Delivery.POSSIBLY_DELIVERED)


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
    attempt: int = 0
    # The policy's routing key when not `session_id`: a tree's branches share their root's (one replica's
    # prefix cache serves the shared prefix).
    policy_session_id: str | None = None
    # What the episode is doing now; a timeout row names it.
    stage: FailureStage = FailureStage.AGENT

    @property
    def chat(self) -> ChatTokenizer:
        return as_chat_tokenizer(self.tokenizer)


class AgentOptions(BaseModel):
    """An agent's `agent.kwargs`, typed: each agent class names its subclass as `Options`. These hold for
    every agent that plays through `Episode`."""

    model_config = ConfigDict(extra="forbid")

    # the policy's context length when neither the policy nor the tokenizer says
    max_context_len: int | None = Field(None, gt=0)


def agent_options(cls: type, kwargs: dict[str, Any]) -> Any:
    """`kwargs` as `cls.Options`; an unknown or bad option is one line naming it and the agent. An agent
    class without `Options` takes its kwargs as they are."""
    options = getattr(cls, "Options", None)
    if options is None:
        return kwargs
    try:
        return options.model_validate(kwargs)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {key!r} (its options: {', '.join(options.model_fields)})")
            elif key:
                problems.append(f"option {key!r}: {err['msg']} (got {err['input']!r})")
            else:
                problems.append(err["msg"].removeprefix("Value error, "))
        raise ValueError(f"{cls.__name__}: {'; '.join(problems)}") from None


@runtime_checkable
class Agent(Protocol):
    """Drives one episode. Returns one row per linear segment (usually exactly one).

    Contract: never raises for model or environment failures (they become rows with a status); raises
    `InfraError` for infrastructure failures so the collector can retry; lets `asyncio.CancelledError`
    through (the collector's episode timeout). A class attribute `Options` (an
    `AgentOptions` subclass) types its `agent.kwargs`; without one they reach the agent unchecked.
    """

    def __init__(self, config: AgentConfig) -> None: ...

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]: ...
