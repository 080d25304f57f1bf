"""Tool-call parsers: generated text in, tool calls out. They read text only; stored tokens never change.

`AgentConfig.tool_parser` names one. Register more with `@register_parser("name")`: a function from the
assistant text and the turn number to a `ParsedReply`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from gym_ray.types import ToolCall


@dataclass
class ParsedReply:
    """The assistant text without call markup, the calls that parsed, and one message per call that did not."""

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


ToolParser = Callable[[str, int], ParsedReply]
PARSERS: dict[str, ToolParser] = {}


def register_parser(name: str) -> Callable[[ToolParser], ToolParser]:
    def deco(fn: ToolParser) -> ToolParser:
        PARSERS[name] = fn
        return fn

    return deco


def get_parser(name: str) -> ToolParser:
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"tool_parser {name!r}: unknown parser; available: {sorted(PARSERS)}") from None


_HERMES_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
HERMES_FORMAT_HINT = '<tool_call>{"name": "<tool name>", "arguments": {<arguments as a JSON object>}}</tool_call>'


@register_parser("hermes")
def parse_hermes(text: str, turn: int = 0) -> ParsedReply:
    """Hermes/Qwen: each call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

    A block left open at the end of the text (generation stopped before `</tool_call>`) is parsed too.
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    for k, m in enumerate(_HERMES_BLOCK.finditer(text)):
        body = m.group(1).strip()
        try:
            calls.append(_call_from_json(body, f"call_{turn}_{k}"))
        except ValueError as e:
            snippet = body if len(body) <= 200 else body[:200] + "..."
            errors.append(f"tool call {k + 1} could not be parsed ({e}): {snippet!r}")
    content = _HERMES_BLOCK.sub("", text).strip()
    return ParsedReply(content=content, calls=calls, errors=errors)


@register_parser("none")
def parse_none(text: str, turn: int = 0) -> ParsedReply:
    """No tools: every reply is a final answer."""
    return ParsedReply(content=text.strip())


def _call_from_json(body: str, call_id: str) -> ToolCall:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at position {e.pos}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError('missing "name" (a non-empty string)')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f'"arguments" is a string but not JSON: {e.msg}') from None
    if not isinstance(args, dict):
        raise ValueError(f'"arguments" must be a JSON object, got {type(args).__name__}')
    return ToolCall(id=call_id, name=name, arguments=args)
