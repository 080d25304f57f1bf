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
