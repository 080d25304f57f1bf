"""The failure taxonomy: who is to blame for a row (`Status`), where in the episode it failed
(`FailureStage`), how (`FailureKind`) and whether the failed request reached the other side (`Delivery`).

Every non-`ok` row carries one `Failure`; trainers and the report group by these fixed vocabularies.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Status(StrEnum):
    """Who is to blame: `env_error` an environment bug, `model_error` the policy (or its call),
    `infra_error` the machinery after every retry, `timeout` the episode's time limit, `aborted` the agent."""

    OK = "ok"
    ENV_ERROR = "env_error"
    MODEL_ERROR = "model_error"
    TIMEOUT = "timeout"
    PREFIX_BREAK = "prefix_break"
    ABORTED = "aborted"
    INFRA_ERROR = "infra_error"


class FailureStage(StrEnum):
    """Where in the episode a failure happened (NeMo Gym 0.7's stages, with the agent's loop split out)."""

    ADMISSION = "admission"  # before the episode ran: unknown env, prompt longer than the context
    SEED = "seed"  # seed_session / reset
    GENERATE = "generate"  # a policy call
    TOOL = "tool"  # a tool call or an env step
    VERIFICATION = "verification"
    AGENT = "agent"  # the agent's own code, the episode as a whole (timeout, lost actor)
    CLEANUP = "cleanup"


class FailureKind(StrEnum):
    """What went wrong, in a small fixed vocabulary a trainer can group by."""

    EXCEPTION = "exception"  # the code raised
    TIMEOUT = "timeout"
    BAD_OUTPUT = "bad_output"  # a wrong type, a non-finite reward, a row breaking the token contract
    SESSION_LOST = "session_lost"  # the environment no longer holds the episode's session
    PEER_LOST = "peer_lost"  # the actor or replica serving the call died
    UNAVAILABLE = "unavailable"  # back pressure, nothing to route to
    PROMPT_TOO_LONG = "prompt_too_long"
    UNKNOWN_ENV = "unknown_env"
    ABORTED = "aborted"  # the engine aborted the generation
    HUNG = "hung"  # too many calls of the environment never returned


class Delivery(StrEnum):
    """Whether the failed request reached the other side (NeMo Gym's `delivery`)."""

    NOT_SENT = "not_sent"
    POSSIBLY_DELIVERED = "possibly_delivered"
    DELIVERED = "delivered"


class Failure(BaseModel):
    """The failure record of a non-`ok` row: stage, kind, delivery (its message is the row's `error`)."""

    stage: FailureStage
    kind: FailureKind
    delivery: Delivery = Delivery.DELIVERED
