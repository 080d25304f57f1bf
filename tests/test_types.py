"""Rollout rows: invariants on write, and the exact Arrow schema through pyarrow and Ray Data."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.types import (
    ROLLOUT_SCHEMA,
    Message,
    Rollout,
    RolloutInvariantError,
    Task,
    ToolCall,
    ToolSpec,
    rollouts_from_arrow,
    rollouts_to_arrow,
)


def make_rollout(i: int = 0, **kw) -> Rollout:
    # prompt | gen(3) tool-delta(2) gen(2)
    base = dict(
        rollout_id=f"r{i}",
        group_id="g0",
        task_id="t0",
        env="weather",
        rollout_index=i,
        group_size=2,
        model="m",
        policy_version=3,
        prompt_token_ids=[1, 2, 3],
        response_token_ids=[10, 11, 12, 20, 21, 13, 14],
        response_loss_mask=[1, 1, 1, 0, 0, 1, 1],
        response_logprobs=[-0.5, -0.25, -0.125, 0.0, 0.0, -1.5, -0.75],
        gen_span_starts=[0, 5],
        gen_span_ends=[3, 7],
        call_finish_reasons=["tool_calls", "stop"],
        gen_policy_versions=[3, 4],
        reward=1.0,
        reward_component_names=["correct", "format"],
        reward_component_values=[0.75, 0.25],
        turn_rewards=[0.0, 1.0],
        num_turns=2,
        num_tool_calls=1,
        messages_json='[{"role": "user", "content": "hi"}]',
    )
    base.update(kw)
    return Rollout(**base)


def test_arrow_round_trip_keeps_values_and_exact_schema(tmp_path):
    rows = [make_rollout(0), make_rollout(1, reward=0.0, status=Status.TIMEOUT, error="episode timed out",
                                          failure_stage="agent", failure_kind="timeout", failure_delivery="delivered",
                                          attempt=2)]
    table = rollouts_to_arrow(rows)
    assert table.schema.equals(ROLLOUT_SCHEMA)
    pq.write_table(table, tmp_path / "part-00000.parquet")

    back = pq.read_table(tmp_path / "part-00000.parquet")
    assert back.schema.equals(ROLLOUT_SCHEMA)
    assert back.schema.field("prompt_token_ids").type == pa.list_(pa.int32())
    assert back.schema.field("response_loss_mask").type == pa.list_(pa.int8())
    assert back.schema.field("response_logprobs").type == pa.list_(pa.float32())
    assert rollouts_from_arrow(back) == rows
    assert not any(pa.types.is_map(f.type) or pa.types.is_union(f.type) for f in back.schema)


# The Parquet schema as every reader knows it, written out by hand: the one derived from `Rollout` must stay
# exactly this (names, order, types, nullability) so existing files and readers are unaffected.
_I32 = pa.list_(pa.int32())
FROZEN_SCHEMA = pa.schema([
    ("rollout_id", pa.string()), ("group_id", pa.string()), ("task_id", pa.string()), ("env", pa.string()),
    ("rollout_index", pa.int32()), ("group_size", pa.int32()), ("segment_index", pa.int32()),
    ("num_segments", pa.int32()), ("attempt", pa.int32()), ("model", pa.string()), ("policy_version", pa.int64()),
    ("tokenizer_fingerprint", pa.string()), ("sampling_params_json", pa.string()), ("prompt_token_ids", _I32),
    ("response_token_ids", _I32), ("response_loss_mask", pa.list_(pa.int8())),
    ("response_logprobs", pa.list_(pa.float32())), ("gen_span_starts", _I32), ("gen_span_ends", _I32),
    ("call_finish_reasons", pa.list_(pa.string())), ("gen_policy_versions", pa.list_(pa.int64())),
    ("reward", pa.float64()), ("reward_component_names", pa.list_(pa.string())),
    ("reward_component_values", pa.list_(pa.float64())), ("turn_rewards", pa.list_(pa.float32())),
    ("num_turns", pa.int32()), ("num_tool_calls", pa.int32()), ("truncated", pa.bool_()), ("status", pa.string()),
    ("mask_sample", pa.bool_()), ("error", pa.string()), ("failure_stage", pa.string()),
    ("failure_kind", pa.string()), ("failure_delivery", pa.string()), ("prompt_messages_json", pa.string()),
    ("messages_json", pa.string()), ("task_json", pa.string()), ("metrics_json", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")), ("tree_id", pa.string()), ("node_id", pa.string()),
    ("parent_node_id", pa.string()), ("branch_token_offset", pa.int32()), ("tool_calls_json", pa.string()),
    ("previous_reward", pa.float64()), ("verifier", pa.string()),
    ("cost", pa.struct([(f, pa.int32() if f in ("sandbox_runs", "retries") else
                         pa.int64() if f.startswith("tokens_") else pa.float64())
                        for f in ("wall_s", "cpu_s", "policy_wall_s", "policy_cpu_s", "tool_wall_s", "tool_cpu_s",
                                  "verify_wall_s", "verify_cpu_s", "env_wall_s", "env_cpu_s", "agent_cpu_s",
                                  "sandbox_s", "sandbox_cpu_s", "sandbox_runs", "tokens_in", "tokens_out", "retries",
                                  "retry_wall_s")])),
])


def test_the_arrow_schema_is_derived_from_rollout_and_unchanged(tmp_path):
    assert ROLLOUT_SCHEMA.names == list(Rollout.model_fields)  # one declaration: the model's fields
    assert ROLLOUT_SCHEMA.equals(FROZEN_SCHEMA, check_metadata=True), ROLLOUT_SCHEMA
    pq.write_table(rollouts_to_arrow([make_rollout(0)]), tmp_path / "part.parquet")
    assert pq.read_schema(tmp_path / "part.parquet").equals(FROZEN_SCHEMA)


def test_a_field_declared_on_the_model_is_its_column():
    from datetime import datetime

    from pydantic import BaseModel

    from gym_ray.types import Float32, Int8, Int32, arrow_schema

    class Row(BaseModel):
        ids: list[Int32]
        mask: list[Int8]
        logprobs: list[Float32]
        count: Int32 = 0
        total: int = 0
        score: float = 0.0
        status: Status = Status.OK
        note: str | None = None
        at: datetime | None = None

    assert arrow_schema(Row).equals(pa.schema([
        ("ids", pa.list_(pa.int32())), ("mask", pa.list_(pa.int8())), ("logprobs", pa.list_(pa.float32())),
        ("count", pa.int32()), ("total", pa.int64()), ("score", pa.float64()), ("status", pa.string()),
        ("note", pa.string()), ("at", pa.timestamp("us", tz="UTC"))]))

    class Nested(BaseModel):
        extra: dict[str, int]

    with pytest.raises(TypeError, match=r"Nested\.extra: no Arrow type"):
        arrow_schema(Nested)


def test_failed_rows_are_masked():
    r = make_rollout(0, status=Status.ENV_ERROR, error="tool server down")
    assert r.mask_sample is True
    f = Rollout.failed(status=Status.TIMEOUT, error="slow", rollout_id="x", group_id="g", task_id="t", env="e",
                       failure=Failure(stage=FailureStage.TOOL, kind=FailureKind.TIMEOUT))
    f.check_invariants()
    assert f.mask_sample and f.response_token_ids == []
    assert (f.failure_stage, f.failure_kind, f.failure_delivery) == ("tool", "timeout", "delivered")


def test_failure_record_is_required_exactly_on_failed_rows():
    with pytest.raises(RolloutInvariantError, match="needs a failure stage and kind"):
        make_rollout(0, status=Status.ENV_ERROR, error="x").check_invariants()
    with pytest.raises(RolloutInvariantError, match="carries no failure record"):
        make_rollout(0, failure_stage="tool", failure_kind="exception").check_invariants()
    make_rollout(0, status=Status.PREFIX_BREAK).check_invariants()  # an earlier segment, not a failure


def test_row_errors_are_redacted(monkeypatch):
    monkeypatch.setenv("MY_ENDPOINT_API_KEY", "sk-live-0123456789abcdef")
    r = make_rollout(0, status=Status.MODEL_ERROR, error="401 for key sk-live-0123456789abcdef: denied",
                     failure_stage="generate", failure_kind="exception")
    assert "sk-live" not in r.error and "[redacted]" in r.error


def test_ray_data_reads_the_same_rows(ray_cluster, tmp_path):
    import ray
    import ray.data

    rows = [make_rollout(0), make_rollout(1)]
    pq.write_table(rollouts_to_arrow(rows), tmp_path / "part-00000.parquet")
    ds = ray.data.read_parquet(str(tmp_path))
    assert ds.schema().base_schema.equals(ROLLOUT_SCHEMA)
    got = sorted(ds.take_all(), key=lambda r: r["rollout_index"])
    assert [list(r["response_token_ids"]) for r in got] == [r.response_token_ids for r in rows]
    assert [list(r["response_loss_mask"]) for r in got] == [r.response_loss_mask for r in rows]
    back = rollouts_from_arrow(pa.concat_tables(ray.get(ds.to_arrow_refs())))
    assert sorted(back, key=lambda r: r.rollout_index) == rows


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"response_loss_mask": [1, 1, 1, 0, 0, 1]}, "response_loss_mask"),
        ({"response_logprobs": [0.0] * 6}, "response_logprobs"),
        ({"gen_span_ends": [3, 9]}, "gen_span_starts"),
        ({"gen_span_starts": [2, 5]}, "response_loss_mask"),
        ({"response_loss_mask": [1, 1, 1, 1, 0, 1, 1]}, "response_loss_mask"),
        ({"call_finish_reasons": ["stop"]}, "call_finish_reasons"),
        ({"gen_policy_versions": [3]}, "gen_policy_versions"),
        ({"reward_component_values": [1.0]}, "reward_component_values"),
        ({"rollout_index": 5}, "rollout_index"),
        ({"gen_span_starts": [5, 0], "gen_span_ends": [7, 3]}, "gen_span_starts"),
    ],
)
def test_invariant_violations_are_rejected_on_write(change, field):
    bad = make_rollout(0, **change)
    with pytest.raises(RolloutInvariantError) as e:
        rollouts_to_arrow([make_rollout(1), bad])
    assert field in str(e.value) and "rollout r0" in str(e.value)


def test_chat_types_to_openai():
    call = ToolCall(name="get_weather", arguments={"city": "Paris"})
    msg = Message(role="assistant", content="", tool_calls=[call])
    out = msg.to_openai()
    assert out["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    spec = ToolSpec.from_openai({"type": "function", "name": "f", "parameters": {"type": "object"}})
    assert ToolSpec.from_openai(spec.to_openai()) == spec
    with pytest.raises(ValueError, match="prompt"):
        Task(task_id="t", env="e", prompt=[])
