"""gym_ray: environments for LLM agents, and token-exact rollouts from them on Ray.

What an environment author needs is here: `from gym_ray import ResourceServer, tool, VerifyResult`.
The names load on first use, so importing any part of gym_ray does not pay for the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gym_ray.resources import (
        EnvError,
        ResourceServer,
        extract_tag,
        final_answer,
        run_in_process,
        tool,
        tool_results,
    )
    from gym_ray.types import Message, StepResult, Task, ToolCall, VerifyResult

__all__ = [
    "EnvError",
    "Message",
    "ResourceServer",
    "StepResult",
    "Task",
    "ToolCall",
    "VerifyResult",
    "extract_tag",
    "final_answer",
    "run_in_process",
    "tool",
    "tool_results",
]
_DATA_MODEL = {"Message", "StepResult", "Task", "ToolCall", "VerifyResult"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'gym_ray' has no attribute {name!r}")
    module = "gym_ray.types" if name in _DATA_MODEL else "gym_ray.resources"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
