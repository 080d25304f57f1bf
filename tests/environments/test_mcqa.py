"""mcqa: strict and lenient letter extraction through the environment."""

from __future__ import annotations

from pathlib import Path

from env_helpers import env_and_tasks, score

ENV_DIR = Path(__file__).parents[2] / "environments" / "mcqa"






def test_right_wrong_and_malformed_answers():
    env, tasks = env_and_tasks("mcqa")
    assert len(tasks) >= 5
    for task in tasks:
        expected = task.verifier_metadata["expected_answer"]
        wrong_letter = "A" if expected != "A" else "B"
        assert score(env, task, f"Let me think. \\boxed{{{expected}}}").reward == 1.0
        assert score(env, task, f"Answer: {expected}").reward == 1.0
        wrong = score(env, task, f"\\boxed{{{wrong_letter}}}")
        assert wrong.reward == 0.0 and wrong.info["reason"] == f"chose {wrong_letter}, expected {expected}"
        malformed = score(env, task, "I am not sure.")
        assert malformed.reward == 0.0 and malformed.info["reason"].startswith("no answer found")
        assert score(env, task, None).info["reason"] == "no final answer"


def test_grading_mode_comes_from_the_row():
    env, tasks = env_and_tasks("mcqa")
    strict = next(t for t in tasks if t.verifier_metadata["grading_mode"] == "strict")
    lenient = next(t for t in tasks if t.verifier_metadata["grading_mode"] == "lenient")
    for task, full in ((strict, 0.0), (lenient, 1.0)):
        letter = task.verifier_metadata["expected_answer"]
        text = next(iter(task.verifier_metadata["options"][ord(letter) - ord("A")].values()))
        assert score(env, task, f"I believe the answer is ({letter}).").reward == full
        assert score(env, task, f"\\boxed{{{text}}}").reward == full
