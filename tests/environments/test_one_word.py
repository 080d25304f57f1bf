"""one_word: exactly one word scores 1, a longer answer less the longer it is; `on_topic` is reported,
not rewarded."""

from __future__ import annotations

import pytest
from env_helpers import env_and_tasks, score


def test_one_word_scores_one_and_longer_answers_less():
    env, tasks = env_and_tasks("one_word")
    assert len(tasks) == 64 and len({t.task_id for t in tasks}) == 64
    fruit = next(t for t in tasks if t.verifier_metadata["category"] == "fruit")
    for answer in ("Apple", " apple. ", "Banana!", "blue-green"):
        assert score(env, fruit, answer).reward == 1.0, answer
    for answer, partial in (("An apple.", 0.5), ("I like apples", 1 / 3), ("42", 0.5), ("a b c d e f g h", 0.125)):
        result = score(env, fruit, answer)
        assert result.reward == pytest.approx(partial) and result.components["one_word"] == 0.0, answer
        assert result.info["reason"].startswith("not one word"), answer
    assert score(env, fruit, None).info["reason"] == "no final answer"


def test_on_topic_is_a_component_beside_the_reward():
    env, tasks = env_and_tasks("one_word")
    fruit = next(t for t in tasks if t.verifier_metadata["category"] == "fruit")
    assert score(env, fruit, "Mango").components == {"one_word": 1.0, "on_topic": 1.0}
    off = score(env, fruit, "Eh!")
    assert off.reward == 1.0 and off.components == {"one_word": 1.0, "on_topic": 0.0}
