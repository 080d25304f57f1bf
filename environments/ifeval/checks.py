"""IFEval-style instructions: each one a prompt phrase and a programmatic check (after Google's IFEval,
`instruction_following_eval`, whose ids and kwargs these follow). A check reads the response only."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass


def words(text: str) -> list[str]:
    return re.findall(r"\b\w+(?:'\w+)?\b", text)


def _relation(count: int, relation: str, n: int) -> bool:
    return count >= n if relation == "at least" else count < n


def _bullets(text: str) -> int:
    return len(re.findall(r"^\s*[*-] ", text, re.M))


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\s*\*\*\*\s*", text.strip())]


def _json(text: str) -> bool:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Instruction:
    phrase: str  # str.format'ed with the kwargs
    check: Callable[..., bool]


INSTRUCTIONS: dict[str, Instruction] = {
    "length_constraints:number_words": Instruction(
        "Answer with {relation} {num_words} words.",
        lambda r, relation, num_words: _relation(len(words(r)), relation, num_words)),
    "detectable_format:number_bullet_lists": Instruction(
        "Your answer must contain exactly {num_bullets} bullet points, in Markdown: * This is a point.",
        lambda r, num_bullets: _bullets(r) == num_bullets),
    "keywords:existence": Instruction(
        "Include the keywords {keywords_text} in the response.",
        lambda r, keywords: all(re.search(rf"\b{re.escape(k)}\b", r, re.I) for k in keywords)),
    "keywords:forbidden_words": Instruction(
        "Do not include the words {forbidden_text} in the response.",
        lambda r, forbidden_words: not any(re.search(rf"\b{re.escape(w)}\b", r, re.I) for w in forbidden_words)),
    "change_case:english_lowercase": Instruction(
        "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
        lambda r: r == r.lower() and any(c.isalpha() for c in r)),
    "change_case:english_capital": Instruction(
        "Your entire response should be in English, and in all capital letters.",
        lambda r: r == r.upper() and any(c.isalpha() for c in r)),
    "detectable_format:title": Instruction(
        "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
        lambda r: re.search(r"<<[^<>\n]+>>", r) is not None),
    "startend:end_checker": Instruction(
        'Finish your response with this exact phrase "{end_phrase}". No other words should follow it.',
        lambda r, end_phrase: r.strip().lower().endswith(end_phrase.lower())),
    "punctuation:no_comma": Instruction(
        "In your entire response, refrain from the use of any commas.",
        lambda r: "," not in r),
    "detectable_format:number_paragraphs": Instruction(
        "There should be {num_paragraphs} paragraphs. Paragraphs are separated with the markdown divider: ***",
        lambda r, num_paragraphs: len([p for p in _paragraphs(r) if p]) == num_paragraphs
        and all(_paragraphs(r))),
    "detectable_content:postscript": Instruction(
        "At the end of your response, please explicitly add a postscript starting with {postscript_marker}",
        lambda r, postscript_marker: re.search(rf"^\s*{re.escape(postscript_marker)}", r, re.M | re.I) is not None),
    "startend:quotation": Instruction(
        "Wrap your entire response with double quotation marks.",
        lambda r: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"'),
    "detectable_format:json_format": Instruction(
        "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```.",
        _json),
}

# which instructions cannot hold together (IFEval's conflict table, for the ones here)
CONFLICTS = {
    frozenset({"change_case:english_lowercase", "change_case:english_capital"}),
    frozenset({"detectable_format:json_format", "startend:quotation"}),
    frozenset({"detectable_format:json_format", "detectable_format:number_paragraphs"}),
    frozenset({"detectable_format:json_format", "detectable_format:title"}),
    frozenset({"detectable_format:json_format", "detectable_format:number_bullet_lists"}),
    frozenset({"detectable_format:json_format", "startend:end_checker"}),
    frozenset({"detectable_format:json_format", "detectable_content:postscript"}),
    frozenset({"startend:quotation", "startend:end_checker"}),
    frozenset({"startend:quotation", "detectable_content:postscript"}),
    frozenset({"change_case:english_capital", "keywords:existence"}),
    frozenset({"change_case:english_lowercase", "detectable_format:title"}),
    frozenset({"length_constraints:number_words", "detectable_format:number_paragraphs"}),
}


def _display(kwargs: dict) -> dict:
    extra = {}
    if "keywords" in kwargs:
        extra["keywords_text"] = ", ".join(kwargs["keywords"])
    if "forbidden_words" in kwargs:
        extra["forbidden_text"] = ", ".join(kwargs["forbidden_words"])
    return {**kwargs, **extra}


def phrase(instruction_id: str, kwargs: dict) -> str:
    return INSTRUCTIONS[instruction_id].phrase.format(**_display(kwargs))


def follows(instruction_id: str, kwargs: dict, response: str) -> bool:
    return bool(INSTRUCTIONS[instruction_id].check(response, **kwargs))
