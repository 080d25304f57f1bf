"""math: math-verify scoring through the environment, and the seeded problem generator."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sympy
from env_helpers import env_and_tasks, score
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from gym_ray.config import load_config
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks

ENV_DIR = Path(__file__).parents[2] / "environments" / "math"
TRANSFORMS = (*standard_transformations, implicit_multiplication_application, convert_xor)






def test_right_wrong_and_malformed_answers():
    env, tasks = env_and_tasks("math")
    assert len(tasks) >= 5 and all(t.env == "math" for t in tasks)
    assert asyncio.run(env.tools()) == []
    for i, task in enumerate(tasks):
        expected = task.verifier_metadata["expected_answer"]
        right = score(env, task, f"Working it out... the answer is \\boxed{{{expected}}}.", f"r{i}")
        assert right.reward == 1.0 and right.error is None, (task.task_id, right)
    task = tasks[0]  # 17 + 25 * 3 = 92
    assert score(env, task, "92", "plain").reward == 1.0
    wrong = score(env, task, r"\boxed{126}", "wrong")
    assert wrong.reward == 0.0 and "does not equal 92" in wrong.info["reason"]
    malformed = score(env, task, "I'm not sure how to do this.", "malformed")
    assert malformed.reward == 0.0 and malformed.info["reason"] == "no answer found in the response"
    silent = score(env, task, None, "silent")
    assert silent.reward == 0.0 and silent.info["reason"] == "no final answer"


def _independent_answer(question: str, kind: str):
    """Solve a generated question with sympy from its text alone."""
    x = sympy.Symbol("x")
    if kind in ("arithmetic", "fractions"):
        expr = re.match(r"Compute (.+?)(?: as a reduced fraction)?\.$", question).group(1)
        return sympy.sympify(expr, rational=True)
    if kind == "linear_equation":
        lhs, rhs = re.match(r"Solve for x: (.+) = (.+)\.$", question).groups()
        return sympy.solve(parse_expr(lhs, transformations=TRANSFORMS) - sympy.Integer(rhs), x)[0]
    if kind == "quadratic":
        poly = re.match(r"What is the largest root of (.+) = 0\?$", question).group(1)
        return max(sympy.solve(parse_expr(poly, transformations=TRANSFORMS), x))
    if kind == "percentage":
        p, n = map(int, re.match(r"What is (\d+)% of (\d+)\?$", question).groups())
        return sympy.Rational(p * n, 100)
    return None


def test_generator_is_seeded_disjoint_and_correct(tmp_path):
    script = ENV_DIR / "generate.py"
    for out in ("a", "b"):
        subprocess.run(
            [
                sys.executable,
                str(script),
                "--num-train",
                "500",
                "--num-test",
                "100",
                "--out-dir",
                str(tmp_path / out),
            ],
            check=True,
            capture_output=True,
        )
    for split in ("train", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_text() == (
            tmp_path / "b" / f"{split}.jsonl"
        ).read_text()
    train = load_tasks([tmp_path / "a" / "train.jsonl"])
    test = load_tasks([tmp_path / "a" / "test.jsonl"])
    assert len(train) == 500 and len(test) == 100
    questions = lambda ts: {t.prompt[-1].content for t in ts}  # noqa: E731
    assert not questions(train) & questions(test) and len(questions(train)) == 500
    kinds = {t.verifier_metadata["kind"] for t in train}
    assert len(kinds) >= 6
    checked = 0
    for t in train + test:
        solved = _independent_answer(t.prompt[-1].content, t.verifier_metadata["kind"])
        if solved is not None:
            assert sympy.Rational(t.verifier_metadata["expected_answer"]) == solved, t
            checked += 1
    assert checked > 300
    # the committed files are what the default seed produces
    assert (ENV_DIR / "data" / "train.jsonl").read_text() == (tmp_path / "a" / "train.jsonl").read_text()
    json.loads((ENV_DIR / "data" / "test.jsonl").read_text().splitlines()[0])


@pytest.mark.slow  # starts Ray and Serve
def test_math_env_on_serve(serve_http_port):
    """math-verify's worker pool works inside a Serve replica, by handle."""
    from ray import serve

    from gym_ray.resources.serve import deploy_env

    cfg = load_config(ENV_DIR / "config.yaml").envs["math"]
    app = deploy_env("math-test", cfg)
    try:
        env = make_env_client("math-test", cfg, app_name=app)
        task = load_tasks(cfg.data)[1]  # 1/2 + 1/3
        assert score(env, task, r"\boxed{\frac{5}{6}}", "serve-right").reward == 1.0
        assert score(env, task, r"\boxed{2/5}", "serve-wrong").reward == 0.0
    finally:
        serve.delete(app)
