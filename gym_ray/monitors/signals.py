"""Per-group and per-episode signals shared by the online monitors and `gym-ray check`'s warnings."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

# Words an output uses to talk to its grader rather than solve the task. "PASS" is matched in capitals only
# (the lowercase verb is everyday English); the rest in any case.
GRADER_WORDS = (
    r"(?-i:\bPASS(?:ED)?\b)", r"\bverifier\b", r"\bgrader\b", r"\bgrading\b", r"\btest harness\b",
    r"\breward\b", r"\ball tests pass", r"\bexpected output\b", r"\bjudge\b", r"\bscore of 1\b",
)


def no_reward_variance(rewards: list[float]) -> bool:
    """Every rollout of the group got the same reward: GRPO learns nothing from it."""
    return len(rewards) > 1 and len(set(rewards)) == 1


def grader_pattern(server_paths: Iterable[str], extra: Iterable[str] = ()) -> re.Pattern[str]:
    """One case-insensitive pattern: the grader words, the names of each env's server module and class
    (`pkg.verify_mod:MathEnv` -> `verify_mod`, `MathEnv`), and `extra` regular expressions."""
    names = set()
    for path in server_paths:
        module, _, cls = path.partition(":")
        names.update(n for n in (module.rsplit(".", 1)[-1], cls) if len(n) >= 5)
    parts = [*GRADER_WORDS, *(rf"\b{re.escape(n)}\b" for n in sorted(names)), *extra]
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)


def most_repeated_call(calls: list[str]) -> int:
    """How often the episode's most repeated tool call (name and arguments) was made."""
    return max(Counter(calls).values(), default=0)


def json_list(text: str | None) -> list[dict]:
    """A row's stored message list (`messages_json`, `prompt_messages_json`): its dict items, [] when unreadable."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []
