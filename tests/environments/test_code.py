"""code: model-written functions are tested in the sandbox through the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from env_helpers import score

from gym_ray.config import load_config
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks

ENV_DIR = Path(__file__).parents[2] / "environments" / "code"

SOLUTIONS = {
    "add": "def add(a, b):\n    return a + b\n",
    "is_palindrome": "def is_palindrome(s):\n    s = s.lower()\n    return s == s[::-1]\n",
    "fizzbuzz": (
        "def fizzbuzz(n):\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n"
        "        return 'Fizz'\n    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)\n"
    ),
    "second_largest": "def second_largest(nums):\n    return sorted(set(nums))[-2]\n",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n",
    "product": "a, b = map(int, input().split())\nprint(a * b)\n",
}


def solution_for(task) -> str:
    prompt = task.prompt[-1].content
    return next(code for name, code in SOLUTIONS.items() if f"`{name}(" in prompt or name == "product")


def test_right_wrong_and_malformed_answers():
    cfg = load_config(ENV_DIR / "config.yaml")
    env = make_env_client("code", cfg.envs["code"])
    tasks = load_tasks(cfg.envs["code"].data)
    assert len(tasks) >= 5
    for task in tasks:
        code = solution_for(task)
        right = score(env, task, f"Here is my solution:\n```python\n{code}```")
        assert right.reward == 1.0 and right.components["pass_rate"] == 1.0, (task.task_id, right)
        broken = code.replace("return", "return None and", 1) if "return" in code else "print(0)\n"
        wrong = score(env, task, f"```python\n{broken}```")
        assert wrong.reward == 0.0 and wrong.info["reason"].endswith("tests failed"), (task.task_id, wrong)
        malformed = score(env, task, code)  # no code fence
        assert (
            malformed.reward == 0.0 and malformed.info["reason"] == "no ```python code block in the response"
        )
    assert score(env, tasks[0], None).info["reason"] == "no final answer"


def test_forged_answers_score_zero_on_every_task():
    """An always-equal object, or an exit after printing an all-pass report, never earns a reward."""
    cfg = load_config(ENV_DIR / "config.yaml")
    env = make_env_client("code", cfg.envs["code"])
    always_equal = (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\n"
        "def {name}(*args):\n    return Anything()\n"
    )
    fake_report = (
        "import os, sys\nprint('[[true, null]]' * 9)\nos.write(1, b'[[true, null]]\\n')\nsys.exit(0)\n"
    )
    for task in load_tasks(cfg.envs["code"].data):
        name = next(n for n in SOLUTIONS if f"`{n}(" in task.prompt[-1].content or n == "product")
        for code in (always_equal.format(name=name), fake_report):
            res = score(env, task, f"```python\n{code}```")
            assert res.reward == 0.0 and res.error is None, (task.task_id, res)


@pytest.mark.slow  # starts Ray and Serve
def test_code_env_on_serve(serve_http_port):
    """The sandbox works inside a Serve replica (its own process and event loop), by handle."""
    from ray import serve

    from gym_ray.resources.serve import deploy_env

    cfg = load_config(ENV_DIR / "config.yaml").envs["code"]
    app = deploy_env("code-test", cfg)
    try:
        env = make_env_client("code-test", cfg, app_name=app)
        task = load_tasks(cfg.data)[0]
        right = score(env, task, f"```python\n{SOLUTIONS['add']}```")
        assert right.reward == 1.0, right
        hostile = score(env, task, "```python\nimport os\nwhile True:\n    os.fork()\n```")
        assert hostile.reward == 0.0 and hostile.error is None
    finally:
        serve.delete(app)
