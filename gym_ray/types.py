"""Core data model: tasks in, token-exact rollouts out, and the one Arrow schema every Parquet file uses."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage, Status
from gym_ray.redact import redact


class ToolCall(BaseModel):
    """One function call the model asked for; `arguments` is the parsed JSON object."""

    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def to_openai(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


class Message(BaseModel):
    """A chat message in OpenAI shape (tool results carry `tool_call_id`)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


class ToolSpec(BaseModel):
    """A tool offered to the model: name, description and JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @classmethod
    def from_openai(cls, spec: dict) -> ToolSpec:
        """Accepts both the Chat Completions (`function: {...}`) and the Responses (flat) shapes."""
        fn = spec.get("function", spec)
        return cls(
            name=fn["name"],
            description=fn.get("description") or "",
            parameters=fn.get("parameters") or {"type": "object", "properties": {}},
        )


class Task(BaseModel):
    """One task row: which environment, the opening chat, optional tools, and what the verifier needs."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    env: str
    prompt: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    verifier_metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task_id", "env")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class StepResult(BaseModel):
    """One step of a step-driven environment (Gymnasium style): the next observation, reward and done."""

    observation: str = ""
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = Field(default_factory=dict)


class VerifyResult(BaseModel):
    """What a verifier says: the scalar reward, optional named components, and diagnostics.

    `error` is set when the verifier itself failed (e.g. a judge call): the rollout is then reported
    with status `env_error`, not scored as 0.
    """

    reward: float = 0.0
    components: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_kind: FailureKind | None = None  # default `exception`; e.g. `bad_output` for an unparseable verdict
    # What the environment spent on the session, measured where it ran (`tool_cpu_s`, `verify_cpu_s`,
    # `env_cpu_s`, `sandbox_s`, `sandbox_cpu_s`, `sandbox_runs`); filled by the runtime, not by verifiers.
    cost: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class ArrowType:
    """Field metadata: the Arrow type of a value that is narrower than its Python type's default."""

    type: pa.DataType


Int32 = Annotated[int, ArrowType(pa.int32())]
Int8 = Annotated[int, ArrowType(pa.int8())]
Float32 = Annotated[float, ArrowType(pa.float32())]
_ARROW_DEFAULTS: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
                                           datetime: pa.timestamp("us", tz="UTC")}


def _arrow_type(annotation: Any, metadata: list[Any], where: str) -> pa.DataType:
    narrowed = [m.type for m in metadata if isinstance(m, ArrowType)]
    if narrowed:
        return narrowed[0]
    if get_origin(annotation) is Annotated:
        inner, *meta = get_args(annotation)
        return _arrow_type(inner, meta, where)
    if get_origin(annotation) in (UnionType, Union):  # `X | None`: Arrow columns are nullable anyway
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _arrow_type(inner[0], [], where)
    if get_origin(annotation) is list:
        return pa.list_(_arrow_type(get_args(annotation)[0], [], where))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a struct column
        return pa.struct(list(arrow_schema(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return pa.string()
    if annotation in _ARROW_DEFAULTS:
        return _ARROW_DEFAULTS[annotation]
    raise TypeError(f"{where}: no Arrow type for {annotation!r}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a flat pydantic model: one column per field, in declaration order, typed from the
    annotation (`ArrowType` metadata where the column is narrower than the Python type)."""
    return pa.schema([(name, _arrow_type(f.annotation, f.metadata, f"{model.__name__}.{name}"))
                      for name, f in model.model_fields.items()])


class RolloutCost(BaseModel):
    """What one episode cost, by stage: wall seconds seen from the episode, CPU seconds where the work ran.

    Stages: `policy` (model calls; CPU is the agent's side only, building requests and reading answers, not
    the engine's), `tool` (tool calls; the agent's side plus the tools' own thread CPU in the environment,
    also on a Serve replica), `verify` (likewise), `env` (seeding, listing tools, steps, closing), and the
    `agent`'s own CPU outside any call. Sandbox runs (wall, their processes' CPU from rusage) are inside the
    tool or verify wall that made them. The environment's CPU arrives with the verify answer, so an episode
    that failed before verification has its agent-side CPU only. All zero in rows written before the
    column existed.
    """

    model_config = ConfigDict(extra="forbid")

    wall_s: float = 0.0
    cpu_s: float = 0.0
    policy_wall_s: float = 0.0
    policy_cpu_s: float = 0.0
    tool_wall_s: float = 0.0
    tool_cpu_s: float = 0.0
    verify_wall_s: float = 0.0
    verify_cpu_s: float = 0.0
    env_wall_s: float = 0.0
    env_cpu_s: float = 0.0
    agent_cpu_s: float = 0.0
    sandbox_s: float = 0.0
    sandbox_cpu_s: float = 0.0
    sandbox_runs: Int32 = 0
    tokens_in: int = 0  # prompt tokens sent, summed over the policy calls
    tokens_out: int = 0
    retries: Int32 = 0  # attempts re-run after an infrastructure failure
    retry_wall_s: float = 0.0  # wall of those attempts and their back-off


COST_STAGES = ("policy", "tool", "verify", "env")


class RolloutInvariantError(ValueError):
    """A rollout row breaks the token contract; the message names the rollout and the field."""


class Rollout(BaseModel):
    """One linear segment of one episode: the row trainers read."""

    model_config = ConfigDict(extra="forbid")

    rollout_id: str
    group_id: str
    task_id: str
    env: str
    rollout_index: Int32 = 0
    group_size: Int32 = 1
    segment_index: Int32 = 0
    num_segments: Int32 = 1
    attempt: Int32 = 0
    model: str = ""
    policy_version: int = 0
    tokenizer_fingerprint: str = ""
    sampling_params_json: str = "{}"
    prompt_token_ids: list[Int32] = Field(default_factory=list)
    response_token_ids: list[Int32] = Field(default_factory=list)
    response_loss_mask: list[Int8] = Field(default_factory=list)
    response_logprobs: list[Float32] = Field(default_factory=list)
    gen_span_starts: list[Int32] = Field(default_factory=list)
    gen_span_ends: list[Int32] = Field(default_factory=list)
    call_finish_reasons: list[str] = Field(default_factory=list)
    gen_policy_versions: list[int] = Field(default_factory=list)
    reward: float = 0.0
    reward_component_names: list[str] = Field(default_factory=list)
    reward_component_values: list[float] = Field(default_factory=list)
    turn_rewards: list[Float32] = Field(default_factory=list)
    num_turns: Int32 = 0
    num_tool_calls: Int32 = 0
    truncated: bool = False
    status: Status = Status.OK
    mask_sample: bool = False
    error: str | None = None
    failure_stage: FailureStage | None = None
    failure_kind: FailureKind | None = None
    failure_delivery: Delivery | None = None
    prompt_messages_json: str = "[]"
    messages_json: str = "[]"
    task_json: str = "{}"
    metrics_json: str = "{}"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Tree rollouts (`collect.tree`): the tree, this leaf's node and the node it branched from, and how many of
    # the row's tokens (prompt + response) it shares with its siblings. Empty and 0 for independent rollouts.
    tree_id: str = ""
    node_id: str = ""
    parent_node_id: str = ""
    branch_token_offset: Int32 = 0
    # The episode's tool calls in order (`gym_ray.resources.records`): per call its name, an arguments digest,
    # the result the model saw (or only its sha256 above a size cap), its status and whether a cache served it.
    tool_calls_json: str = "[]"
    # Re-verification (`gym-ray reverify`): the reward before it, and the verifier that gave `reward` (server
    # class, package version, config digest). None and "" for a row scored where it was played.
    previous_reward: float | None = None
    verifier: str = ""
    # What the episode cost, by stage (`RolloutCost`); the same on every segment of the episode.
    cost: RolloutCost = Field(default_factory=RolloutCost)

    @model_validator(mode="after")
    def _non_ok_rows_are_masked(self) -> Rollout:
        if self.status != Status.OK:
            self.mask_sample = True
        if self.error:
            self.error = redact(self.error)
        return self

    @property
    def failure(self) -> Failure | None:
        if self.failure_stage is None or self.failure_kind is None:
            return None
        return Failure(stage=self.failure_stage, kind=self.failure_kind,
                       delivery=self.failure_delivery or Delivery.DELIVERED)

    def set_failure(self, failure: Failure | None) -> None:
        self.failure_stage = failure.stage if failure else None
        self.failure_kind = failure.kind if failure else None
        self.failure_delivery = failure.delivery if failure else None

    def check_invariants(self) -> None:
        """Raise `RolloutInvariantError` naming the broken field; called on every write."""

        def fail(field: str, why: str) -> None:
            raise RolloutInvariantError(f"rollout {self.rollout_id} (segment {self.segment_index}): {field}: {why}")

        n = len(self.response_token_ids)
        if len(self.response_loss_mask) != n:
            fail("response_loss_mask", f"length {len(self.response_loss_mask)} != response_token_ids length {n}")
        if len(self.response_logprobs) != n:
            fail("response_logprobs", f"length {len(self.response_logprobs)} != response_token_ids length {n}")
        if len(self.gen_span_starts) != len(self.gen_span_ends):
            fail("gen_span_ends", "gen_span_starts and gen_span_ends differ in length")
        if len(self.call_finish_reasons) != len(self.gen_span_starts):
            fail("call_finish_reasons", f"{len(self.call_finish_reasons)} reasons for {len(self.gen_span_starts)} spans")
        if len(self.gen_policy_versions) != len(self.gen_span_starts):
            fail("gen_policy_versions", f"{len(self.gen_policy_versions)} versions for {len(self.gen_span_starts)} spans")
        failed = self.status not in (Status.OK, Status.PREFIX_BREAK)
        if failed and (self.failure_stage is None or self.failure_kind is None):
            fail("failure_stage", f"a row with status {self.status.value} needs a failure stage and kind")
        if not failed and self.failure_kind is not None:
            fail("failure_kind", f"a row with status {self.status.value} carries no failure record")
        if len(self.reward_component_names) != len(self.reward_component_values):
            fail("reward_component_values", "names and values differ in length")
        if any(m not in (0, 1) for m in self.response_loss_mask):
            fail("response_loss_mask", "values must be 0 or 1")
        expected = [0] * n
        prev_end = 0
        for i, (s, e) in enumerate(zip(self.gen_span_starts, self.gen_span_ends, strict=True)):
            if not prev_end <= s <= e <= n:
                fail("gen_span_starts", f"span {i} [{s}, {e}) is not inside the response (length {n}) after {prev_end}")
            expected[s:e] = [1] * (e - s)
            prev_end = e
        if expected != list(self.response_loss_mask):
            first = next(i for i, (a, b) in enumerate(zip(expected, self.response_loss_mask, strict=True)) if a != b)
            fail("response_loss_mask", f"must be 1 exactly on generated spans; differs at position {first}")
        if not 0 <= self.rollout_index < self.group_size:
            fail("rollout_index", f"{self.rollout_index} outside group of size {self.group_size}")
        if not 0 <= self.segment_index < self.num_segments:
            fail("segment_index", f"{self.segment_index} outside {self.num_segments} segments")
        if not 0 <= self.branch_token_offset <= len(self.prompt_token_ids) + n:
            fail("branch_token_offset", f"{self.branch_token_offset} outside the row's "
                 f"{len(self.prompt_token_ids) + n} tokens")

    @classmethod
    def failed(cls, *, status: Status, error: str, failure: Failure, **identity: Any) -> Rollout:
        """The row for an episode that produced no usable tokens: accounted for, masked out of the loss."""
        row = cls(status=status, error=error, mask_sample=True, **identity)
        row.set_failure(failure)
        return row


class RolloutGroup(BaseModel):
    """All rollouts of one task sampled together (GRPO group); always complete."""

    group_id: str
    task_id: str
    rollouts: list[Rollout]

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.rollouts if r.segment_index == r.num_segments - 1]


# The one Parquet schema, from the one declaration of the row above.
ROLLOUT_SCHEMA = arrow_schema(Rollout)


def rollouts_to_arrow(rollouts: list[Rollout]) -> pa.Table:
    """Validate every row, then build one table with exactly `ROLLOUT_SCHEMA`."""
    columns: dict[str, list] = {name: [] for name in ROLLOUT_SCHEMA.names}
    for r in rollouts:
        r.check_invariants()
        for name in ROLLOUT_SCHEMA.names:
            value = getattr(r, name)
            if isinstance(value, BaseModel):
                value = value.model_dump()
            columns[name].append(value.value if isinstance(value, StrEnum) else value)
    return pa.Table.from_pydict(columns, schema=ROLLOUT_SCHEMA)


def table_to_ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes, for sending between processes: Ray's own reduction of a pa.Table
    copies every offsets buffer in Python (py-spy: ~15% of an agent actor's CPU at c=16), bytes go as is."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def rollouts_from_arrow(table: pa.Table) -> list[Rollout]:
    """Inverse of `rollouts_to_arrow`; extra columns (e.g. hive partitions) are ignored."""
    missing = set(ROLLOUT_SCHEMA.names) - set(table.column_names)
    if missing:
        raise ValueError(f"not a rollout table: missing columns {sorted(missing)}")
    table = table.select(ROLLOUT_SCHEMA.names)
    return [Rollout(**row) for row in table.to_pylist()]
