"""Multiple-choice answers: which option letter did the model pick?

`strict` accepts only the letter in the last `\\boxed{}` or on a final `Answer: X` line, so the format
is part of what is learned. `lenient` also accepts `the answer is (B)`, `**Answer:** B`, a reply that
is just the letter, and the text of an option in place of its letter.
"""

from __future__ import annotations

import re
from typing import Literal

from gym_ray.resources.verifiers.text import last_boxed, strip_think
from gym_ray.types import VerifyResult

GradingMode = Literal["strict", "lenient"]

_ANSWER_LINE = re.compile(r"^[ \t>*_#]*answer[ \t*_]*:[ \t*_]*\(?([A-Za-z])\)?[ \t*_.]*$", re.I | re.M)
# "the answer is B" / "answer: (b)": a bare letter must be upper case ("the answer is a bit ..." is no choice)
_ANSWER_IS = re.compile(
    r"(?i:answer)\s*(?:(?i:is)|:)?\s*[:\-]?\s*(?:(?i:option)\s*)?[*_]*(?:\(([A-Za-z])\)|([A-Z]))[*_]*(?![\w])"
)
_BOX_LETTER = re.compile(r"^(?:\\text\{)?\s*\(?([A-Za-z])\)?\s*\}?$")


def option_letters(options: list | dict | None) -> list[str]:
    """Letters of the options: keys of a dict, of NeMo Gym's `[{"A": "..."}, ...]`, or A, B, ... by position."""
    if not options:
        return list("ABCD")
    if isinstance(options, dict):
        return [str(k).upper() for k in options]
    if all(isinstance(o, dict) and len(o) == 1 for o in options):
        return [str(next(iter(o))).upper() for o in options]
    return [chr(ord("A") + i) for i in range(len(options))]


def option_texts(options: list | dict | None) -> dict[str, str]:
    if not options:
        return {}
    if isinstance(options, dict):
        return {str(k).upper(): str(v) for k, v in options.items()}
    if all(isinstance(o, dict) and len(o) == 1 for o in options):
        return {str(k).upper(): str(v) for o in options for k, v in o.items()}
    return {chr(ord("A") + i): str(o) for i, o in enumerate(options)}


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\\text\{([^}]*)\}", r"\1", s)).strip(" .*").lower()


def extract_choice(
    response: str, mode: GradingMode = "strict", options: list | dict | None = None
) -> str | None:
    """The chosen option letter (upper case), or None when no valid choice can be read."""
    text = strip_think(response)
    letters = set(option_letters(options))
    texts = option_texts(options)

    def valid(letter: str | None) -> str | None:
        return letter.upper() if letter and letter.upper() in letters else None

    boxed = last_boxed(text)
    lines = _ANSWER_LINE.findall(text)
    if mode == "strict":
        if boxed is not None and (m := _BOX_LETTER.match(boxed)):
            return valid(m.group(1))
        return valid(lines[-1]) if lines and boxed is None else None
    if boxed is not None:
        if m := _BOX_LETTER.match(boxed):
            return valid(m.group(1))
        by_text = [k for k, v in texts.items() if _norm(v) == _norm(boxed)]
        if by_text:
            return by_text[0]
    if lines:
        return valid(lines[-1])
    stated = _ANSWER_IS.findall(text)
    if stated:
        return valid("".join(stated[-1]))
    if m := re.fullmatch(r"\s*\(?([A-Za-z])\)?[.)]?\s*", text):
        return valid(m.group(1))
    by_text = [k for k, v in texts.items() if _norm(v) and _norm(v) == _norm(text)]
    return by_text[0] if by_text else None


def verify_mcqa(
    response: str, expected: str, grading_mode: GradingMode = "strict", options: list | dict | None = None
) -> VerifyResult:
    """Reward 1 when the extracted letter is `expected`; 0 with a reason otherwise."""
    if grading_mode not in ("strict", "lenient"):
        return VerifyResult(error=f"grading_mode {grading_mode!r}: expected 'strict' or 'lenient'")
    expected = str(expected).strip().upper()
    choice = extract_choice(response, grading_mode, options)
    info = {"expected_answer": expected, "extracted_answer": choice, "grading_mode": grading_mode}
    if choice is None:
        how = "\\boxed{X} or a final 'Answer: X' line" if grading_mode == "strict" else "an option letter"
        return VerifyResult(reward=0.0, info={**info, "reason": f"no answer found: expected {how}"})
    if choice != expected:
        return VerifyResult(reward=0.0, info={**info, "reason": f"chose {choice}, expected {expected}"})
    return VerifyResult(reward=1.0, info=info)
