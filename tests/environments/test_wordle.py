"""wordle: the official lists and a seeded test split; feedback right on repeated letters; a scripted solver
that guesses the answer on turn k (after k-1 valid guesses and a rejected one) solves every row, wrong or
rejected guesses score 0."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest
from env_helpers import env_and_tasks
from gym_ray_env_wordle.generate import SEED, TEST
from gym_ray_env_wordle.server import ALLOWED, ANSWERS, feedback

from gym_ray.config import load_config
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import Message, Task

DATA = Path(__file__).parents[2] / "environments" / "wordle" / "data"
OTHERS = sorted(ALLOWED - ANSWERS)  # valid guesses that are never the answer


async def play(env, sid, task, actions):
    await env.reset(sid, task)
    steps = []
    for a in actions:
        steps.append(await env.step(sid, a))
        if steps[-1].done:
            break
    result = await env.verify(sid, task, [])
    await env.close_session(sid)
    return steps, result


def guess(word: str) -> str:
    return f"Let me think. <guess>{word}</guess>"


def test_the_lists_and_splits():
    assert len(ANSWERS) == 2315 and len(ALLOWED) == 12972 and ANSWERS <= ALLOWED
    assert all(len(w) == 5 and w.isalpha() and w.islower() for w in ALLOWED)
    test = [t.verifier_metadata["answer"] for t in load_tasks([str(DATA / "test.jsonl")])]
    train = [t.verifier_metadata["answer"] for t in load_tasks([str(DATA / "train.jsonl")])]
    shuffled = (DATA / "solution_list.csv").read_text().split()
    random.Random(SEED).shuffle(shuffled)
    assert test == shuffled[:TEST] and train == shuffled[TEST:] and len(test) == 500
    assert not set(test) & set(train) and set(test) | set(train) == ANSWERS


@pytest.mark.parametrize(("guess_", "answer", "marks"), [
    ("crane", "crane", "GGGGG"),
    ("babes", "abbey", "YYGGX"),   # a b each once in the guess, b twice in the answer
    ("geese", "those", "XXXGG"),   # the two extra e's are grey: the answer has one, matched green
    ("eerie", "elder", "GYYXX"),   # second e yellow (the answer's other e), third e grey
    ("eerie", "crane", "XXYXG"),   # only the green e counts
    ("abide", "speed", "XXXYY"),
    ("speed", "abide", "XXYXY"),   # one e in the answer: the first e yellow, the second grey
    ("llama", "hello", "YYXXX"),   # two l's in both: both yellow
    ("lolly", "hello", "XYGGX"),   # three l's guessed, two in the answer, both green: the first l is grey
    ("mamma", "maxim", "GGYXX"),   # three m's guessed, two in the answer
])
def test_feedback_on_repeated_letters(guess_, answer, marks):
    assert feedback(guess_, answer) == marks


def test_feedback_counts_each_letter_as_often_as_the_answer_has_it():
    rng = random.Random(0)
    words, answers = sorted(ALLOWED), sorted(ANSWERS)
    for _ in range(5000):
        g, a = rng.choice(words), rng.choice(answers)
        marks = feedback(g, a)
        assert [m == "G" for m in marks] == [x == y for x, y in zip(g, a, strict=True)]
        for letter in set(g):
            marked = sum(m != "X" for m, x in zip(marks, g, strict=True) if x == letter)
            assert marked == min(g.count(letter), a.count(letter)), (g, a, marks)
            yellow = [i for i, (m, x) in enumerate(zip(marks, g, strict=True)) if x == letter and m == "Y"]
            grey = [i for i, (m, x) in enumerate(zip(marks, g, strict=True)) if x == letter and m == "X"]
            assert not yellow or not grey or max(yellow) < min(grey)  # yellows go left to right


def test_the_scripted_solver_solves_every_row_of_both_splits():
    env, tasks = env_and_tasks("wordle")
    tasks += load_tasks([str(DATA / "train.jsonl")])

    async def go():
        out = []
        for n, t in enumerate(tasks):
            answer, k = t.verifier_metadata["answer"], 1 + n % 6
            wrong = [OTHERS[(n * 7 + i) % len(OTHERS)] for i in range(k - 1)]
            actions = [guess(w) for w in wrong[:1]] + [guess("zzzzz")] + [guess(w) for w in wrong[1:]]
            out.append((t, wrong, await play(env, f"s{n}", t, [*actions, guess(answer)])))
        return out

    for t, wrong, (steps, result) in asyncio.run(go()):
        answer = t.verifier_metadata["answer"]
        assert steps[-1].done and steps[-1].reward == 1.0 and result.reward == 1.0, (t.task_id, steps[-1])
        assert result.info["outcome"] == "solved" and result.info["guesses"] == len(wrong) + 1
        assert result.info["rejected"] == 1 and "does not count" in steps[min(1, len(wrong))].observation
        shown = [s.observation.split(".")[0] for s in steps if "Rejected" not in s.observation]
        assert shown == [f"{w.upper()} {' '.join(feedback(w, answer))}" for w in [*wrong, answer]]
    assert len(tasks) == 2315


def test_wrong_or_rejected_guesses_score_zero_on_every_test_row():
    env, tasks = env_and_tasks("wordle")

    async def go():
        out = []
        for n, t in enumerate(tasks):
            wrong = [guess(OTHERS[(n + i) % len(OTHERS)]) for i in range(7)]
            rejected = ["<guess>qqqqq</guess>", "I pick crane", "<guess>cranes</guess>"] * 2
            out.append((await play(env, f"w{n}", t, wrong), await play(env, f"r{n}", t, rejected)))
        return out

    for (wrong_steps, wrong), (rejected_steps, rejected) in asyncio.run(go()):
        assert len(wrong_steps) == 6 and wrong_steps[-1].done and "Out of guesses" in wrong_steps[-1].observation
        assert wrong.reward == 0.0 and wrong.info["outcome"] == "lost" and wrong.info["guesses"] == 6
        assert len(rejected_steps) == 6 and rejected_steps[-1].done and rejected.reward == 0.0
        assert rejected.info["outcome"] == "too many rejected guesses" and rejected.info["guesses"] == 0


def test_guessing_after_the_game_ended_is_refused():
    env, tasks = env_and_tasks("wordle")

    async def go():
        await play(env, "s", tasks[0], [guess(tasks[0].verifier_metadata["answer"])])
        await env.reset("s2", tasks[0])
        await env.step("s2", guess(tasks[0].verifier_metadata["answer"]))
        with pytest.raises(EnvError, match="step after the episode ended"):
            await env.step("s2", guess("crane"))

    asyncio.run(go())


def test_bonus_for_unused_guesses_and_a_bad_row():
    cfg = load_config(DATA.parent / "config.yaml").envs["wordle"]
    env = make_env_client("wordle", cfg.model_copy(update={"config": {"bonus_per_unused_guess": 0.1}}))
    task = load_tasks(cfg.data)[0]
    answer = task.verifier_metadata["answer"]
    steps, result = asyncio.run(play(env, "b", task, [guess(OTHERS[0]), guess(answer)]))
    assert result.reward == pytest.approx(1.4) and result.info["guesses"] == 2
    bad = Task(task_id="bad", env="wordle", prompt=[Message(role="user", content="play")],
               verifier_metadata={"answer": "zzzzz"})
    with pytest.raises(EnvError, match="verifier_metadata.answer 'zzzzz' is not a Wordle answer"):
        asyncio.run(env.reset("x", bad))
    assert Counter(len(w) for w in ANSWERS) == {5: 2315}
