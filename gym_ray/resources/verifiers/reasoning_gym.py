"""reasoning-gym answers, scored by the dataset's own `score_answer` (in a scorer worker process).

A task carries the dataset entry it was generated from (`question`, `answer`, `metadata` with
`source_dataset`), as NeMo Gym's reasoning_gym rows do. The answer is the last `<answer>...</answer>`,
else the last `\\boxed{}`; a response with neither scores 0 with the reason.
"""

from __future__ import annotations

from gym_ray.resources.pool import ProcessTimeout
from gym_ray.resources.verifiers.text import last_boxed, last_tag, strip_think
from gym_ray.resources.verifiers.workers import run_scorer
from gym_ray.types import VerifyResult


def extract_answer(response: str) -> tuple[str | None, str | None]:
    """(answer, where it came from: "answer_tag" | "boxed"), or (None, None)."""
    text = strip_think(response)
    if (tagged := last_tag(text, "answer")) is not None:
        return tagged, "answer_tag"
    if (boxed := last_boxed(text)) is not None:
        return boxed, "boxed"
    return None, None


def score_reasoning_gym(answer: str, entry: dict) -> float | str:
    """The dataset's `score_answer(answer, entry)`, or the text of what it raised on this answer.

    Runs in a scorer worker (importable by name, as spawned workers need).
    """
    import reasoning_gym

    try:
        return float(reasoning_gym.get_score_answer_fn(entry["metadata"]["source_dataset"])(answer, entry))
    except Exception as e:  # a scorer choking on a malformed answer: the answer is at fault
        return f"{type(e).__name__}: {e}"


async def verify_reasoning_gym(response: str, entry: dict, *, timeout_s: float = 10.0) -> VerifyResult:
    """Reward = the dataset's score of the extracted answer (1.0 for a right one; some datasets give partial)."""
    dataset = (entry.get("metadata") or {}).get("source_dataset")
    if not dataset or "answer" not in entry:
        return VerifyResult(error="the task has no reasoning-gym entry (answer, metadata.source_dataset)")
    from reasoning_gym.factory import DATASETS

    if dataset not in DATASETS:
        return VerifyResult(error=f"reasoning-gym has no dataset {dataset!r}")
    answer, source = extract_answer(response)
    info = {"dataset": dataset, "expected": entry["answer"], "extracted": answer, "extracted_from": source}
    if answer is None:
        return VerifyResult(
            reward=0.0, info={**info, "reason": "no <answer>...</answer> or \\boxed{} in the response"}
        )
    try:
        score = await run_scorer(
            score_reasoning_gym, answer, entry, timeout_s=timeout_s, preload=("reasoning_gym",)
        )
    except ProcessTimeout:
        return VerifyResult(reward=0.0, info={**info, "reason": f"scoring took longer than {timeout_s} s"})
    if isinstance(score, str):
        return VerifyResult(
            reward=0.0, info={**info, "reason": f"score_answer failed on this answer: {score}"}
        )
    if score < 1.0:
        info["reason"] = f"score_answer gave {score:g} for {answer!r} (expected {entry['answer']!r})"
    return VerifyResult(reward=score, info=info)
