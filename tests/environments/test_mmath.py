"""mmath: the shipped MMATH files load in every language; the reference answers, boxed, score 374/374
through the environment and wrong answers 0, AIME by integer and the others by math-verify."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from env_helpers import env_and_tasks, verdicts
from gym_ray_env_mmath.server import LANGUAGES, MMath, load_problems

from gym_ray.collect.api import own_tasks
from gym_ray.config import load_config
from gym_ray.tasks import TaskLoadError

CONFIG = Path(__file__).parents[2] / "environments" / "mmath" / "config.yaml"


@pytest.fixture(scope="module")
def env_tasks():
    return env_and_tasks("mmath")


def test_every_language_has_the_same_374_problems():
    english = load_problems("en")
    assert Counter(p["data_source"] for p in english) == {
        "MATH500": 311,
        "AIME2024": 30,
        "CNMO": 18,
        "AIME2025": 15,
    }
    for lang in LANGUAGES:
        rows = MMath(language=lang).tasks("mmath")
        assert [t.verifier_metadata["answer"] for t in rows] == [p["answer"] for p in english], lang
        first = rows[0].prompt[0].content
        assert first.startswith(load_problems(lang)[0]["question"]) and "\\boxed{}" in first.split("\n")[-1]
    aime = MMath(language=["en", "zh"], source=["AIME2024", "AIME2025"]).tasks("mmath")
    assert (
        len(aime) == 90 and aime[0].task_id == "en/AIME2024/0" and aime[-1].task_id.startswith("zh/AIME2025/")
    )
    assert len(MMath(language="all", source="CNMO").tasks("mmath")) == 180
    with pytest.raises(ValueError, match=r"config.language: unknown \['xx'\]"):
        MMath(language="xx")
    cfg = load_config(CONFIG, ["envs.mmath.config.source=AIME2026"])
    with pytest.raises(TaskLoadError, match="envs.mmath: its own tasks: config.source: unknown"):
        own_tasks("mmath", cfg.envs["mmath"], None)


def _wrong(task, tasks) -> str:
    """A wrong answer: an integer answer plus one, else the next problem's different answer."""
    answer = task.verifier_metadata["answer"].strip("$")
    if answer.lstrip("-").isdigit():
        return str(int(answer) + 1)
    i = tasks.index(task)
    return next(
        o.verifier_metadata["answer"].strip("$")
        for o in tasks[i + 1 :] + tasks[:i]
        if o.verifier_metadata["answer"] != task.verifier_metadata["answer"]
        and o.verifier_metadata["source"] == task.verifier_metadata["source"]
    )


def test_oracle_and_wrong_answers(env_tasks):
    env, tasks = env_tasks
    assert len(tasks) == 374 and {t.verifier_metadata["language"] for t in tasks} == {"en"}
    right = verdicts(
        env,
        [
            (t, f"Reasoning...\nSo the answer is $\\boxed{{{t.verifier_metadata['answer'].strip('$')}}}$.")
            for t in tasks
        ],
    )
    assert [r.reward for r in right] == [1.0] * 374, [
        (t.task_id, r) for t, r in zip(tasks, right, strict=True) if r.reward != 1.0
    ]
    wrong = verdicts(env, [(t, f"\\boxed{{{_wrong(t, tasks)}}}") for t in tasks])
    bad = [
        (t.task_id, r)
        for t, r in zip(tasks, wrong, strict=True)
        if r.reward != 0.0 or r.error or not r.info.get("reason")
    ]
    assert not bad, bad[:5]


def test_answer_forms(env_tasks):
    env, tasks = env_tasks
    aime = next(
        t
        for t in tasks
        if t.verifier_metadata["source"] == "AIME2024" and t.verifier_metadata["answer"] == "45"
    )
    cnmo = next(t for t in tasks if t.verifier_metadata["answer"] == "$\\frac{\\sqrt{6}}{4}$")
    cases = [
        (aime, "\\boxed{045}", 1.0, None),
        (aime, "\\boxed{{45}}", 1.0, None),
        (aime, "45", 0.0, "no \\boxed{} answer"),
        (aime, "\\boxed{45.5}", 0.0, "'45.5' is not an integer"),
        (aime, "\\boxed{44} then \\boxed{45}", 1.0, None),
        (cnmo, "\\boxed{\\dfrac{\\sqrt6}{4}}", 1.0, None),
        (cnmo, "\\boxed{\\sqrt{6}/4}", 1.0, None),
        (cnmo, "\\boxed{\\sqrt{6}}", 0.0, "does not equal"),
    ]
    results = verdicts(env, [(t, a) for t, a, _, _ in cases])
    for (_, a, reward, reason), r in zip(cases, results, strict=True):
        assert r.reward == reward and r.error is None, (a, r)
        if reason:
            assert reason in r.info["reason"], (a, r)
