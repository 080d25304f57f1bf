"""One word: name a thing of a category in exactly one word. A format a 135M model learns in a few GRPO
steps (it tends to answer in sentences), so a newcomer's first closed loop shows the reward rising."""

import re

from gym_ray.resources import ResourceServer
from gym_ray.types import VerifyResult

WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")  # letters, with inner hyphens/apostrophes: "blue-green"


def answer_word(answer: str) -> str | None:
    """The single word the answer consists of (trailing full stop or "!" allowed), else None."""
    text = answer.strip().rstrip(".!").strip()
    return text if WORD.fullmatch(text) else None


class OneWord(ResourceServer):
    def score(self, task, answer):
        word = answer_word(answer)
        examples = {w.lower() for w in task.verifier_metadata.get("examples", [])}
        on_topic = float(word is not None and word.lower() in examples)
        if word is None:
            reason = f"not one word ({len(answer.split())} words)"
        else:
            reason = f"one word: {word!r}" + ("" if on_topic else " (not a listed example)")
        # The reward is the format alone; on_topic is reported beside it, never mixed in.
        return VerifyResult(reward=float(word is not None), components={"one_word": float(word is not None),
                                                                        "on_topic": on_topic},
                            info={"reason": reason})
