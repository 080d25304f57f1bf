"""The Responses-API shapes NeMo Gym's servers read: a transcript as `output` items, a `response` object,
and a task as the row its `/seed_session` and `/verify` take.

Both directions use them: the `/run` agent server answers NeMo Gym with them, and the NeMo Gym bridge
env (`bridge.py`) sends them to a NeMo Gym resources server's verifier.
"""

from __future__ import annotations

import time
import uuid

from gym_ray.types import Task, ToolSpec

# Roles NeMo Gym's strict `NeMoGymEasyInputMessage` accepts in `input`.
INPUT_ROLES = {"system", "developer", "user", "assistant"}


class RowShapeError(ValueError):
    """A task with no NeMo Gym form; the message names the task and the field."""


def _item_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:16]}"


def output_items(messages: list[dict], calls: list[dict] | None = None) -> list[dict]:
    """Chat messages after the prompt (OpenAI shape) as Responses-API items. `calls`, one dict per model
    call of the *last* calls in order, is merged into that call's last item (the token ids NeMo-RL reads):
    an episode whose history was rewritten keeps every message, with ids only on its last segment's calls."""
    calls = list(calls or [])
    untracked = sum(m["role"] == "assistant" for m in messages) - len(calls)
    items: list[dict] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "tool":
            items.append({"type": "function_call_output", "id": _item_id("fco"), "call_id": message.get("tool_call_id"),
                          "output": content, "status": "completed"})
            continue
        if role != "assistant":  # an env-step observation: the next user turn
            items.append({"type": "message", "role": role, "content": content})
            continue
        turn = []
        if content or not message.get("tool_calls"):
            turn.append({"type": "message", "id": _item_id("msg"), "role": "assistant", "status": "completed",
                         "content": [{"type": "output_text", "text": content, "annotations": []}]})
        for call in message.get("tool_calls") or []:  # OpenAI chat shape: {id, function: {name, arguments}}
            turn.append({"type": "function_call", "id": _item_id("fc"), "call_id": call["id"],
                         "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                         "status": "completed"})
        if untracked > 0:
            untracked -= 1
        elif calls:
            turn[-1] |= calls.pop(0)
        items.extend(turn)
    return items


def response_object(response_id: str, model: str, output: list[dict], tools: list[dict],
                    incomplete: bool = False) -> dict:
    """A `NeMoGymResponse` (OpenAI's `Response` with the fields NeMo Gym's pydantic model requires)."""
    return {"id": response_id, "object": "response", "created_at": int(time.time()), "model": model,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": tools,
            "status": "incomplete" if incomplete else "completed"}


def responses_tool(spec: ToolSpec) -> dict:
    """A tool in the Responses API's flat function shape (what `responses_create_params.tools` holds)."""
    return {"type": "function", "name": spec.name, "description": spec.description,
            "parameters": spec.parameters, "strict": False}


def create_params(task: Task, tools: list[ToolSpec] | None = None) -> dict:
    """`responses_create_params` of a task: its prompt as `input`, its tools (else `tools`) as `tools`."""
    bad = [m.role for m in task.prompt if m.role not in INPUT_ROLES or m.tool_calls]
    if bad:
        raise RowShapeError(f"task {task.task_id!r}: prompt: a {bad[0]!r} message with tool calls or results "
                            f"has no NeMo Gym input form (roles {', '.join(sorted(INPUT_ROLES))})")
    params: dict = {"input": [{"role": m.role, "content": m.content} for m in task.prompt]}
    offered = task.tools if task.tools is not None else tools
    if offered:
        params["tools"] = [responses_tool(t) for t in offered]
    return params
