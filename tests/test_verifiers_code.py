"""Code answers: the ```python block runs against the task's tests inside the bubblewrap sandbox."""

from __future__ import annotations

import asyncio

import pytest

from gym_ray.resources.sandbox import Sandbox, SandboxLimits
from gym_ray.resources.verifiers import build_test_spec, verify_code

ASSERTS = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]}
CALLS = {"unit_tests": {"fn_name": "add", "inputs": [[1, 2], "3\n4"], "outputs": [3, "7"]}}
STDIO = {"unit_tests": {"inputs": ["1 2\n", "5 6\n"], "outputs": ["3\n", "11"]}}
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxLimits(wall_time_s=10, cpu_time_s=4, memory_mb=256), max_concurrency=2)


def check(sandbox, response, meta, **kw):
    return asyncio.run(verify_code(response, meta, sandbox, **kw))


@pytest.mark.parametrize(("response", "meta"), [(GOOD, ASSERTS), (GOOD, CALLS), (PROGRAM, STDIO)])
def test_right_solution_scores_one(sandbox, response, meta):
    res = check(sandbox, response, meta)
    assert res.reward == 1.0 and res.components == {"pass_rate": 1.0} and res.error is None, res


def test_wrong_solution_scores_zero_with_failures(sandbox):
    res = check(sandbox, "```python\ndef add(a, b):\n    return a - b if a > 0 else a + b\n```", ASSERTS)
    assert res.reward == 0.0 and res.components["pass_rate"] == pytest.approx(1 / 3)
    assert res.info["reason"] == "2 of 3 tests failed" and len(res.info["failures"]) == 2
    res = check(sandbox, "```python\ndef add(a, b):\n    return a * b\n```", CALLS)
    assert res.reward == 0.0 and "expected 3, got 2" in res.info["failures"][0]
    res = check(sandbox, "```python\nprint(42)\n```", STDIO)
    assert res.reward == 0.0 and res.components["pass_rate"] == 0.0


def test_malformed_responses_score_zero_with_reason(sandbox):
    res = check(sandbox, "def add(a, b): return a + b", ASSERTS)
    assert res.reward == 0.0 and res.info["reason"] == "no ```python code block in the response"
    res = check(sandbox, "```python\ndef add(a, b)\n    return a + b\n```", ASSERTS)
    assert res.reward == 0.0 and "SyntaxError" in res.info["failures"][0]
    res = check(sandbox, "```python\ndef plus(a, b):\n    return a + b\n```", CALLS)
    assert res.reward == 0.0 and "defines no function 'add'" in res.info["failures"][0]


def test_hanging_and_hostile_solutions_fail_their_tests(sandbox):
    res = check(
        sandbox, "```python\ndef add(a, b):\n    while True:\n        pass\n```", ASSERTS, test_timeout_s=0.5
    )
    assert res.reward == 0.0 and res.info["failures"] == [f"test {i}: timed out after 0.5s" for i in range(3)]
    exits = "```python\nimport os\nprint('fake report')\nos._exit(0)\n```"
    res = check(sandbox, exits, ASSERTS)
    assert res.reward == 0.0 and "tests did not complete" in res.info["reason"]
    net = "```python\nimport urllib.request\ndef add(a, b):\n    return urllib.request.urlopen('http://1.1.1.1').status\n```"
    res = check(sandbox, net, ASSERTS)
    assert res.reward == 0.0 and res.components["pass_rate"] == 0.0


def test_bad_tests_are_task_errors(sandbox):
    assert check(sandbox, GOOD, {}).error
    assert check(sandbox, GOOD, {"unit_tests": {"inputs": [1], "outputs": []}}).error
    with pytest.raises(ValueError, match="list of assert statements"):
        build_test_spec({"tests": "assert True"}, 1.0)
