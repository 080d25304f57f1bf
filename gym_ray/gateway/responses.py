"""`/v1/responses` (the OpenAI Responses API, non-streaming, stateless) on top of the chat path.

A Responses request is turned into the equivalent chat request (instructions -> system message; message,
`function_call` and `function_call_output` items -> messages; flat function tools -> chat tools) and
recorded by the same session logic, so the transcript, segments and matching rules are those of chat
completions. The answer's output items are the chat reply's content and tool calls. Server-side state
(`previous_response_id`, `conversation`) is refused with a 400: the agent must send its
whole input, which is what keeps the transcript checkable. `stream: true` sends the finished answer as the
Responses event sequence (created, output items with their text / argument deltas, completed).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from gym_ray.gateway.params import GatewayError, check_responses
from gym_ray.gateway.session import OFF_LOOP_SIZE, GatewaySession, _text


def _chat_tools(tools: list | None) -> list[dict] | None:
    out = []
    for t in tools or ():
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else t
            raise GatewayError(400, f"only function tools are supported, got {kind!r}")
        out.append({"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")
                                                      if k in t}})
    return out or None


def chat_messages(body: dict) -> list[dict]:
    """The Responses `instructions` + `input` as chat messages (consecutive calls join one assistant turn)."""
    msgs: list[dict] = []
    if body.get("instructions"):
        msgs.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*msgs, {"role": "user", "content": items}]
    if not isinstance(items, list):
        raise GatewayError(400, "input: a string or a list of items is required")
    for item in items:
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            role = item.get("role")
            content = _text(item.get("content"))
            if role == "assistant" and msgs and msgs[-1]["role"] == "assistant" and not msgs[-1].get("tool_calls"):
                msgs[-1]["content"] += content
            else:
                msgs.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
            if msgs and msgs[-1]["role"] == "assistant":
                msgs[-1].setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            out = item.get("output")
            msgs.append({"role": "tool", "tool_call_id": item["call_id"],
                         "content": out if isinstance(out, str) else _text(out)})
        elif kind == "reasoning":
            continue  # the gateway's models write no separate reasoning items
        else:
            raise GatewayError(400, f"unsupported input item type {kind!r}")
    return msgs


def _chat_body(body: dict) -> dict[str, Any]:
    return {"model": body.get("model"), "messages": chat_messages(body), "tools": _chat_tools(body.get("tools")),
            "tool_choice": body.get("tool_choice")}


async def create_response(session: GatewaySession, body: Any, size: int = 0) -> dict:
    """Answer one Responses request (`size`: the body's bytes; a big one is converted off the event loop)."""
    session.check_open()
    req = check_responses(body, session.ctx.sampling, session.ep.limit)
    chat_body = await asyncio.to_thread(_chat_body, body) if size > OFF_LOOP_SIZE else _chat_body(body)
    chat, gen, prompt = await session.chat_completion(chat_body, req, size)
    choice = chat["choices"][0]
    msg = choice["message"]
    output: list[dict] = []
    if msg.get("content"):
        output.append({"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "assistant",
                       "status": "completed",
                       "content": [{"type": "output_text", "text": msg["content"], "annotations": []}]})
    for call in msg.get("tool_calls") or ():
        output.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call["id"],
                       "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                       "status": "completed"})
    cut = choice["finish_reason"] == "length"
    return {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None, "error": None,
        "model": chat["model"], "output": output, "instructions": body.get("instructions"),
        "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "text": {"format": {"type": "text"}},
        "usage": {"input_tokens": len(prompt), "output_tokens": len(gen.token_ids),
                  "total_tokens": len(prompt) + len(gen.token_ids),
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        "policy_version": gen.policy_version,
        **({"ignored_params": chat["ignored_params"]} if "ignored_params" in chat else {}),
    }


async def response_events(resp: dict):
    """The Responses streaming events for a finished response (as `text/event-stream` bytes)."""
    seq = 0

    def event(kind: str, **fields) -> bytes:
        nonlocal seq
        seq += 1
        data = {"type": kind, "sequence_number": seq - 1, **fields}
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    pending = {**resp, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    for i, item in enumerate(resp["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield event("response.output_item.added", output_index=i,
                        item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": []}
            yield event("response.content_part.added", item_id=item["id"], output_index=i, content_index=0, part=part)
            yield event("response.output_text.delta", item_id=item["id"], output_index=i, content_index=0,
                        delta=text, logprobs=[])
            yield event("response.output_text.done", item_id=item["id"], output_index=i, content_index=0,
                        text=text, logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=i, content_index=0,
                        part={**part, "text": text})
        else:
            yield event("response.output_item.added", output_index=i,
                        item={**item, "status": "in_progress", "arguments": ""})
            yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=i,
                        delta=item["arguments"])
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                        arguments=item["arguments"], name=item["name"])
        yield event("response.output_item.done", output_index=i, item=item)
    yield event("response.incomplete" if resp["status"] == "incomplete" else "response.completed", response=resp)
