"""`@tool`: a typed method becomes an OpenAI function schema and a validated call.

The schema comes from the type hints (through pydantic) and the docstring (summary = description,
`Args:` entries = parameter descriptions), so a tool is written once, as ordinary Python.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from gym_ray.types import ToolSpec

# HTTP routes of the resource server; a tool by one of these names could never be reached.
RESERVED_NAMES = frozenset({"seed_session", "verify", "close_session", "tools", "reset", "step", "health"})
_MARK = "__gym_ray_tool__"


class ToolArgumentError(ValueError):
    """The model called a tool with arguments that do not fit its signature."""


def json_arguments(arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    """Raw arguments as the model wrote them (a dict or a JSON string) -> a dict, or `ToolArgumentError`."""
    if arguments is None or arguments == "":
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise ToolArgumentError(f"arguments are not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(arguments, dict):
        raise ToolArgumentError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments


@dataclass(frozen=True)
class _Options:
    name: str | None
    blocking: bool
    cacheable: bool


def tool(fn: Callable | None = None, *, name: str | None = None, blocking: bool = False,
         cacheable: bool = False) -> Any:
    """Mark a method of a `ResourceServer` as a tool the model may call.

    `blocking=True` runs a sync tool in a worker thread (for I/O that has no async client);
    otherwise sync tools run inline, which is cheapest for the usual pure-Python tool.
    `cacheable=True` declares the tool deterministic (its result depends on its arguments only, never on
    the episode's state): each server replica then answers a repeated call from a bounded cache
    (`ResourceServer.tool_cache_size`), across episodes, and the row's metrics count the hits.
    """

    def mark(f: Callable) -> Callable:
        setattr(f, _MARK, _Options(name=name, blocking=blocking, cacheable=cacheable))
        return f

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True)
class ToolDef:
    """One tool of a server class: its spec for the model and how to call it."""

    name: str
    spec: ToolSpec
    args_model: type[BaseModel]
    fn: Callable  # the unbound method
    is_async: bool
    blocking: bool
    cacheable: bool = False

    def parse_arguments(self, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
        """Validate raw arguments (a dict or a JSON string) into keyword arguments for the method."""
        arguments = json_arguments(arguments)
        try:
            parsed = self.args_model.model_validate(arguments)
        except ValidationError as e:
            problems = []
            for err in e.errors():
                where = ".".join(str(p) for p in err["loc"]) or "arguments"
                msg = "unexpected argument" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append(f"{where}: {msg}")
            raise ToolArgumentError("; ".join(problems)) from None
        return {k: getattr(parsed, k) for k in type(parsed).model_fields}


def _strip_titles(node: Any) -> Any:
    """Pydantic adds `title` everywhere; OpenAI schemas are clearer without them."""
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def build_tool(owner: str, fn: Callable) -> ToolDef:
    """Build the schema and validator of one marked method; errors name the class and method."""
    opts: _Options = getattr(fn, _MARK)
    name = opts.name or fn.__name__
    where = f"{owner}.{fn.__name__}"
    if name in RESERVED_NAMES:
        raise TypeError(f"{where}: tool name {name!r} is reserved (it is an HTTP route of every server)")
    is_async = inspect.iscoroutinefunction(fn)
    if is_async and opts.blocking:
        raise TypeError(f"{where}: blocking=True is for sync tools; an async tool must not block")
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    param_docs = {p.arg_name: p.description for p in doc.params}
    hints = get_type_hints(fn, include_extras=True)
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "self":
        raise TypeError(f"{where}: a tool must be a method taking `self` first")
    fields: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"{where}: parameter {p.name!r} must be a plain named parameter")
        if p.name not in hints:
            raise TypeError(f"{where}: parameter {p.name!r} needs a type hint (it becomes the JSON schema)")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints[p.name], Field(default, description=param_docs.get(p.name)))
    args_model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    schema = _strip_titles(args_model.model_json_schema())
    schema.setdefault("properties", {})
    description = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)
    spec = ToolSpec(name=name, description=description, parameters=schema)
    return ToolDef(
        name=name, spec=spec, args_model=args_model, fn=fn, is_async=is_async, blocking=opts.blocking,
        cacheable=opts.cacheable,
    )


def collect_tools(cls: type) -> dict[str, ToolDef]:
    """All `@tool` methods of a class and its bases (a subclass may override a tool)."""
    found: dict[str, Callable] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if callable(value) and hasattr(value, _MARK):
                found[attr] = value
            elif attr in found:
                del found[attr]  # overridden by a plain method: no longer a tool
    tools: dict[str, ToolDef] = {}
    for fn in found.values():
        td = build_tool(cls.__qualname__, fn)
        if td.name in tools:
            raise TypeError(f"{cls.__qualname__}: two tools are named {td.name!r}")
        tools[td.name] = td
    return tools
