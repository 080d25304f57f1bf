"""math-verify answers, checked in scorer worker processes with a hard timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from gym_ray.resources.pool import ProcessTimeout
from gym_ray.resources.verifiers import verify_math
from gym_ray.resources.verifiers.workers import run_scorer


def check(response: str, expected: str, **kw):
    return asyncio.run(verify_math(response, expected, **kw))


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"So the result is \boxed{\frac{1}{2}}.", "1/2"),
        ("0.5", r"\frac{1}{2}"),
        ("x = 3", "3"),
        (r"\boxed{2} no wait, \boxed{4}", "4"),
        (r"<think>\boxed{9}</think> The answer is $4$.", "4"),
        (r"\boxed{x^2 + 2x + 1}", "(x+1)^2"),
    ],
)
def test_right_answers_score_one(response, expected):
    res = check(response, expected)
    assert res.reward == 1.0 and res.error is None, res


def test_wrong_answer_scores_zero_with_reason():
    res = check(r"\boxed{7}", "8")
    assert res.reward == 0.0 and res.error is None
    assert res.info["reason"] == "answer 7 does not equal 8"
    res = check(r"\boxed{4} ... and finally \boxed{2}", "4")  # only the last box counts
    assert res.reward == 0.0


def test_malformed_answers_score_zero_with_reason():
    res = check("I do not know", "3")
    assert res.reward == 0.0 and res.info["reason"] == "no answer found in the response"
    res = check("<think>3</think>   ", "3")
    assert res.reward == 0.0 and res.info["reason"] == "empty response"


def test_unparseable_expected_answer_is_a_task_error():
    res = check(r"\boxed{3}", "")
    assert res.error and "cannot be parsed" in res.error


def test_overrunning_check_scores_zero_with_reason():
    res = check(r"\boxed{x^2 + 2x + 1}", "(x+1)^2", timeout_s=0.001)
    assert res.reward == 0.0 and res.info["timeout"] is True and "longer than 0.001 s" in res.info["reason"]
    assert check(r"\boxed{12}", "12").reward == 1.0


def test_scorer_timeout_counts_the_scorer_not_the_worker_start():
    async def go():
        assert await run_scorer(pow, 2, 10, timeout_s=5, preload=("sympy",)) == 1024
        t0 = time.monotonic()
        with pytest.raises(ProcessTimeout, match="longer than 0.5 s"):
            await run_scorer(time.sleep, 30, timeout_s=0.5)
        assert time.monotonic() - t0 < 10  # the alarm stopped it; nothing waited for the 30 s
        assert await run_scorer(pow, 3, 2, timeout_s=5) == 9  # the worker is still usable

    asyncio.run(go())
