"""Pulling the answer out of a model's text: reasoning blocks, `\\boxed{}`, tags, code fences."""

from __future__ import annotations

import re

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def strip_think(text: str) -> str:
    """Drop `<think>...</think>` blocks (and an unclosed trailing one): the answer is what follows."""
    text = _THINK.sub("", text)
    if "<think>" in text:
        text = text[: text.index("<think>")]
    elif "</think>" in text:  # templates that open the block in the prompt leave only the closing tag
        text = text[text.rindex("</think>") + len("</think>") :]
    return text


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if there is none."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def last_tag(text: str, tag: str) -> str | None:
    """The stripped content of the last `<tag>...</tag>`, or None."""
    found = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.DOTALL)
    return found[-1].strip() if found else None


def last_code_block(text: str, languages: tuple[str, ...] = ("python", "py", "python3", "")) -> str | None:
    """The last fenced code block whose language is one of `languages` ("" = no language given)."""
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in languages]
    return blocks[-1] if blocks else None
