"""One word: name a thing of a category in exactly one word. A format a 135M model learns in a few GRPO
steps (it tends to answer in sentences), so a newcomer's first closed loop shows the reward rising."""

import re

from gym_ray import ResourceServer, VerifyResult

WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")  # letters, with inner hyphens/apostrophes: "blue-green"


def answer_word(answer: str) -> str | None:
    """The single word the answer consists of (trailing full stop or "!" allowed), else None."""
    text = answer.strip().rstrip(".!").strip()
    return text if WORD.fullmatch(text) else None


class OneWord(ResourceServer):
    verifier = "one word (partial credit by length), `on_topic` reported"
    origin = "native"

    def score(self, task, answer):
        word = answer_word(answer)
        words = max(len(answer.split()), 1)
        examples = {w.lower() for w in task.verifier_metadata.get("examples", [])}
        on_topic = float(word is not None and word.lower() in examples)
        # 1 for one word; else partial credit that falls with length (1/words, at most 0.5), so a
        # group of rambling answers still ranks the shorter ones higher and GRPO has a gradient.
        reward = 1.0 if word is not None else min(0.5, 1.0 / words)
        reason = (f"one word: {word!r}" + ("" if on_topic else " (not a listed example)") if word is not None
                  else f"not one word ({words} words)")
        # on_topic is reported beside the reward, never mixed in.
        return VerifyResult(reward=reward, components={"one_word": float(word is not None), "on_topic": on_topic},
                            info={"reason": reason})
