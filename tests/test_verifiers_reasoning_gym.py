"""reasoning-gym answers scored by the dataset's own score_answer."""

from __future__ import annotations

import asyncio
import json

import reasoning_gym

from gym_ray.resources.verifiers import extract_answer, verify_reasoning_gym


def entry(name="basic_arithmetic", seed=3):
    """A real generated entry, through JSON as it travels in a task row."""
    return json.loads(json.dumps(reasoning_gym.create_dataset(name, size=1, seed=seed)[0]))


def check(response, e):
    return asyncio.run(verify_reasoning_gym(response, e))


def test_extract_answer():
    assert extract_answer("work <answer>1</answer> more <answer> 42 </answer>") == ("42", "answer_tag")
    assert extract_answer(r"so \boxed{7}") == ("7", "boxed")
    assert extract_answer("<think><answer>1</answer></think>nothing") == (None, None)


def test_right_wrong_and_malformed():
    e = entry()
    right = check(f"Let me compute. <answer>{e['answer']}</answer>", e)
    assert right.reward == 1.0 and right.error is None and right.info["dataset"] == "basic_arithmetic"
    wrong = check(f"<answer>{int(e['answer']) + 1}</answer>", e)
    assert wrong.reward == 0.0 and "score_answer gave 0" in wrong.info["reason"]
    malformed = check(f"The answer is {e['answer']}", e)
    assert malformed.reward == 0.0 and "no <answer>" in malformed.info["reason"]


def test_another_dataset_uses_its_own_scorer():
    e = entry("word_sorting", seed=1)
    assert check(f"<answer>{e['answer']}</answer>", e).reward == 1.0
    assert check("<answer>zzz</answer>", e).reward < 1.0


def test_unknown_dataset_is_a_task_error():
    e = {"question": "?", "answer": "1", "metadata": {"source_dataset": "no_such_dataset"}}
    assert "no dataset 'no_such_dataset'" in check("<answer>1</answer>", e).error
    assert check("<answer>1</answer>", {"question": "?"}).error
