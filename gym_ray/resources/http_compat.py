"""Reading NeMo Gym-shaped HTTP bodies: task rows, Responses-API outputs, session ids.

A NeMo Gym agent POSTs the whole task row to `/seed_session` and `/verify` (the latter with the
model's `response` added) and carries the session as a cookie; our own agents send
`{"task": {...}, "messages": [...], "session_id": ...}`. Both shapes are accepted.
"""

from __future__ import annotations

import json
from typing import Any

from gym_ray.tasks import parse_row
from gym_ray.types import Message, Task, ToolCall

SESSION_COOKIE = "gym_ray_session"
SESSION_HEADER = "x-session-id"  # also what Serve's consistent-hash router uses for stickiness
_NOT_TASK = {"session_id", "messages", "response", "action"}


def session_id_from(body: dict, headers: Any, cookies: dict) -> str | None:
    return body.get("session_id") or headers.get(SESSION_HEADER) or cookies.get(SESSION_COOKIE)


def parse_task(body: dict, env_name: str) -> Task:
    """The task in a request body (raises ValueError naming the field)."""
    row = (
        body["task"]
        if isinstance(body.get("task"), dict)
        else {k: v for k, v in body.items() if k not in _NOT_TASK}
    )
    return parse_row(row, default_env=env_name, default_id="http")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def responses_output_to_messages(output: list[dict]) -> list[Message]:
    """Responses-API output items (message, function_call, function_call_output) as chat messages."""
    messages: list[Message] = []
    for item in output:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(Message(role=item.get("role", "assistant"), content=_text(item.get("content"))))
        elif kind == "function_call":
            call_id = item.get("call_id") or item.get("id")
            call = ToolCall(name=item["name"], arguments=_arguments(item.get("arguments")))
            if call_id:
                call.id = call_id
            messages.append(Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            messages.append(
                Message(role="tool", tool_call_id=item.get("call_id"), content=_text(item.get("output")))
            )
    return messages


def _arguments(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"_unparsed": raw}
    return parsed if isinstance(parsed, dict) else {"_unparsed": raw}


def parse_messages(body: dict, task: Task) -> list[Message]:
    """The transcript to verify: our `messages`, or the prompt plus a NeMo Gym `response.output`."""
    if "messages" in body:
        return [Message.model_validate(m) for m in body["messages"]]
    response = body.get("response")
    if isinstance(response, dict):
        return [*task.prompt, *responses_output_to_messages(response.get("output") or [])]
    return list(task.prompt)


# --- NeMo Gym 0.7.0 session bodies -----------------------------------------------------------
# An Environment Server seeds with `{resources_session_id, episode_id, task_id, task_data}` and closes with
# `{resources_session_id, episode_id}`; both answers are exactly `{resources_session_id}` (its response
# models forbid extra keys). A simple_agent's `/run` seeds with the task row itself.
SESSION_KEY_07 = "resources_session_id"


def is_session_body_07(body: dict) -> bool:
    return SESSION_KEY_07 in body and "episode_id" in body


def seed_request(body: dict, env_name: str) -> tuple[str | None, Task]:
    """(session id the caller assigned, task) of a `/seed_session` body, legacy or 0.7.0."""
    if is_session_body_07(body):
        data = body.get("task_data")
        if not isinstance(data, dict):
            raise ValueError("task_data: must be the task row (a JSON object)")
        task_id = body.get("task_id") if isinstance(body.get("task_id"), dict) else {}
        return str(body[SESSION_KEY_07]), parse_row(data, default_env=env_name,
                                                    default_id=str(task_id.get("task_id") or "http"))
    return body.get("session_id"), parse_task(body, env_name)


def verify_request(body: dict, env_name: str) -> tuple[dict, Task, list[Message]]:
    """(fields the answer echoes, task, transcript) of a `/verify` body. Legacy: the task row plus the
    agent's `response`. 0.7.0's typed body `{episode_id, task_id, verification_input}`: the input holds the
    row (as `resolved_row`, or its own fields) and the episode (`response` or `messages`)."""
    if not {"episode_id", "task_id", "verification_input"} <= body.keys():
        task = parse_task(body, env_name)
        return body, task, parse_messages(body, task)
    inner = body["verification_input"]
    if not isinstance(inner, dict):
        raise ValueError("verification_input: must be an object holding the task row and the episode's response")
    row = inner["resolved_row"] if isinstance(inner.get("resolved_row"), dict) else {
        k: v for k, v in inner.items() if k not in ("response", "messages")}
    task = parse_task(row, env_name)
    return {"episode_id": body["episode_id"], "task_id": body["task_id"]}, task, parse_messages(inner, task)


def session_response(body: dict, session_id: str, **legacy: Any) -> dict:
    """The answer to a seed or close: 0.7.0's exact shape, else gym_ray's `{session_id, ...}`."""
    if is_session_body_07(body):
        return {SESSION_KEY_07: session_id}
    return {"session_id": session_id, **legacy}


def verify_failure(error: str, kind: str | None) -> dict:
    """The body of a failed `/verify` (HTTP 500): no `reward` at all, so nothing can train on a made-up
    0, and the failure in NeMo Gym 0.7.0's words (`EpisodeFailure`; `mask_sample`, `failure_kind`,
    `failure_reason` of its verify response). `kind` is gym_ray's FailureKind, kept as `gym_ray_kind`."""
    reason = error[:2000]
    return {
        "error": f"verify failed: {error}",
        "mask_sample": True,
        "failure_kind": "verifier_error",
        "failure_reason": reason,
        "failure": {"failure_reason": reason, "terminal": False, "failure_kind": "verifier_error",
                    "stage": "verification", "gym_ray_kind": kind or "exception"},
    }


def aggregate_metrics(verify_responses: list[dict]) -> dict:
    """NeMo Gym's `AggregateMetrics` for `/aggregate_metrics`: mean / min / max of every top-level number
    of the verify responses, per task (`_ng_task_index`) and overall, plus `pass@k/reward` (k = every
    rollout count up to the smallest group; reward 1.0 passes), the estimator gym_ray's metrics use."""
    from gym_ray.stats import pass_at_k

    def stats(rows: list[dict]) -> dict[str, float]:
        keys = sorted({k for r in rows for k, v in r.items()
                       if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("_ng_")})
        out: dict[str, float] = {}
        for key in keys:
            values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
            out |= {f"mean/{key}": sum(values) / len(values), f"min/{key}": min(values), f"max/{key}": max(values)}
        return out

    groups: dict[Any, list[dict]] = {}
    for row in verify_responses:
        groups.setdefault(row.get("_ng_task_index"), []).append(row)
    per_task = [{"_ng_task_index": idx, "num_rollouts": len(rows), **stats(rows)} for idx, rows in groups.items()]
    overall: dict[str, Any] = {"num_rollouts": len(verify_responses), **stats(verify_responses)}
    scored = [[r for r in rows if isinstance(r.get("reward"), int | float)] for rows in groups.values()]
    if scored and all(scored):
        for k in range(1, min(len(rows) for rows in scored) + 1):
            overall[f"pass@{k}/reward"] = sum(
                pass_at_k(len(rows), sum(r["reward"] >= 1.0 for r in rows), k) for rows in scored
            ) / len(scored)
    key = {k: v for k, v in overall.items() if k in ("mean/reward", "pass@1/reward")}
    return {"group_level_metrics": per_task, "agent_metrics": overall, "key_metrics": key}
