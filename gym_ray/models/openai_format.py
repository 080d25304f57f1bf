"""OpenAI response shapes built from a token-level `Generation`, and Hermes tool-call parsing for replies.

Used by the policies we host ourselves (the scripted kind) so their HTTP surface and `chat()` answer in
the same shape vLLM's OpenAI server does, token ids and logprobs included (`return_token_ids`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from gym_ray.clients import Generation
from gym_ray.config import SamplingConfig

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def render_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The Hermes text form a model writes for one call."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def parse_hermes_tool_calls(text: str) -> tuple[str, list[dict]]:
    """Split a reply into its plain content and OpenAI `tool_calls` (unparsable blocks stay as content)."""
    calls: list[dict] = []
    kept: list[str] = []
    last = 0
    for m in _TOOL_CALL_RE.finditer(text):
        try:
            obj = json.loads(m.group(1))
            name, args = obj["name"], obj.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            continue
        kept.append(text[last : m.start()])
        last = m.end()
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
        )
    kept.append(text[last:])
    return "".join(kept).strip() if calls else text, calls


def sampling_from_openai(body: dict[str, Any]) -> SamplingConfig:
    """The sampling fields of an OpenAI request body (chat or completions) as our SamplingConfig."""
    stop = body.get("stop") or []
    fields: dict[str, Any] = {
        "temperature": body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0,
        "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
        "stop": [stop] if isinstance(stop, str) else list(stop),
        "seed": body.get("seed"),
    }
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if body.get("top_k") is not None:
        fields["top_k"] = body["top_k"]
    return SamplingConfig(**fields)


def _logprobs_content(gen: Generation, tokens: list[str]) -> list[dict]:
    return [
        {"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []}
        for tok, lp in zip(tokens, gen.logprobs, strict=True)
    ]


def chat_response(
    gen: Generation, prompt_token_ids: list[int], tokens: list[str], *, with_logprobs: bool, with_ids: bool
) -> dict:
    """A `chat.completion` object; `tokens` are the generated tokens as strings (for logprobs)."""
    content, calls = parse_hermes_tool_calls(gen.text)
    message: dict[str, Any] = {"role": "assistant", "content": (content or None) if calls else content}
    if calls:
        message["tool_calls"] = calls
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": "tool_calls" if calls and gen.finish_reason == "stop" else gen.finish_reason,
        "logprobs": {"content": _logprobs_content(gen, tokens)} if with_logprobs else None,
    }
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": gen.model,
        "choices": [choice],
        "usage": _usage(prompt_token_ids, gen),
        "policy_version": gen.policy_version,
    }
    if with_ids:
        out["prompt_token_ids"] = prompt_token_ids
        choice["token_ids"] = gen.token_ids
    return out


def completion_response(
    gen: Generation, prompt_token_ids: list[int], tokens: list[str], *, logprobs: int | None, with_ids: bool
) -> dict:
    """A `text_completion` object in vLLM's shape (`prompt_token_ids`/`token_ids` per choice)."""
    choice: dict[str, Any] = {"index": 0, "text": gen.text, "finish_reason": gen.finish_reason, "logprobs": None}
    if logprobs is not None:
        offsets, pos = [], 0
        for tok in tokens:
            offsets.append(pos)
            pos += len(tok)
        choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": gen.logprobs,
            "text_offset": offsets,
            "top_logprobs": [{tok: lp} for tok, lp in zip(tokens, gen.logprobs, strict=True)],
        }
    if with_ids:
        choice["prompt_token_ids"] = prompt_token_ids
        choice["token_ids"] = gen.token_ids
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": gen.model,
        "choices": [choice],
        "usage": _usage(prompt_token_ids, gen),
        "policy_version": gen.policy_version,
    }


def _usage(prompt_token_ids: list[int], gen: Generation) -> dict:
    n_prompt, n_gen = len(prompt_token_ids), len(gen.token_ids)
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen}


def models_response(model: str) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "gym_ray"}]}
