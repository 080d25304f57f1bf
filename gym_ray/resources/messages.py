"""Reading a transcript in `verify`: the final answer, what each tool returned, tagged spans."""

from __future__ import annotations

import re

from gym_ray.types import Message


def final_answer(messages: list[Message]) -> str | None:
    """The text of the last assistant message, or None if there is none or it is empty."""
    for m in reversed(messages):
        if m.role == "assistant":
            text = m.content.strip()
            return text or None
    return None


def tool_results(messages: list[Message], name: str | None = None) -> list[str]:
    """Outputs of tool messages, in order; with `name`, only those answering calls to that tool."""
    names = {c.id: c.name for m in messages if m.tool_calls for c in m.tool_calls}
    return [
        m.content
        for m in messages
        if m.role == "tool" and (name is None or names.get(m.tool_call_id or "", m.name) == name)
    ]


def extract_tag(text: str, tag: str) -> str | None:
    """The stripped content of the last `<tag>...</tag>` in `text`, or None."""
    found = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.DOTALL)
    return found[-1].strip() if found else None
