"""ifbench: 276 of IFBench's 294 rows (the 18 whose checkers need NLTK data no package ships are left out);
responses built to follow a sampled instruction type pass and ones built to break it score 0; on every row the
env's strict and loose verdicts equal those of the package's own harness on its own data file; bad rows raise."""

from __future__ import annotations

import collections
import copy
import random
from importlib.resources import files

import pytest
from env_helpers import env_and_tasks, score
from gym_ray_env_ifbench.checkers import NEEDS_NLTK_DATA
from gym_ray_env_ifbench.server import INSTRUCTION_DICT, example
from ifbench import evaluation_lib as harness

from gym_ray.resources.client import make_env_client
from gym_ray.types import Task

EXCLUDED = ["133", "134", "135", "136", "137", "171", "172", "173", "174", "175", "176", "177",
            "257", "258", "259", "260", "261", "262"]
SENTENCE = "The garden was quiet in the early morning light and the birds sang softly."


def source() -> dict[str, harness.InputExample]:
    """The package's own rows, read by its own reader, by key."""
    rows = harness.read_prompt_list(str(files("ifbench") / "data" / "IFBench_test.jsonl"))
    return {r.key: r for r in rows}


def first_option(options: str) -> str:
    sep = "/" if "/" in options else "or" if "or" in options else ","
    return options.split(sep)[0].strip()


def follow(instruction_id: str, kw: dict) -> str | None:
    """A response that follows one instruction, built from its kwargs (None: a type not in the sample)."""
    match instruction_id:
        case "count:keywords_multiple":
            words = [kw[f"keyword{n}"] for n in range(1, 6)]
            return " ".join(w for w, times in zip(words, (1, 2, 3, 5, 7), strict=True) for _ in range(times))
        case "count:word_count_range":
            return " ".join(["word"] * int(kw["min_words"]))
        case "count:numbers":
            return "Counting: " + " ".join(str(n) for n in range(1, int(kw["N"]) + 1)) + "."
        case "count:unique_word_count":
            return " ".join(f"word{n}" for n in range(int(kw["N"])))
        case "format:no_whitespace":
            return "Nowhitespaceanywhereinthisanswer."
        case "format:parentheses":
            return "(one [two {three (four [five])}])"
        case "format:quotes":
            return "\"He said 'she said \"hello\" to me' yesterday\""
        case "format:options":
            return first_option(kw["options"])
        case "format:list":
            return f"apples {kw['sep']} pears {kw['sep']} plums"
        case "sentence:keyword":
            return " ".join(f"This is sentence {n + 1}{' with ' + kw['word'] if n + 1 == kw['N'] else ''}."
                            for n in range(int(kw["N"])))
        case "format:emoji":
            return "I like tea \U0001F375. I like cake \U0001F370."
    return None


def breaking(instruction_id: str, kw: dict) -> str:
    """A response that breaks one instruction of the sample."""
    match instruction_id:
        case "count:keywords_multiple":
            return follow(instruction_id, kw).rsplit(" ", 1)[0]  # the fifth keyword six times, not seven
        case "count:word_count_range":
            return " ".join(["word"] * (int(kw["max_words"]) + 1))
        case "count:numbers":
            return "Counting: " + " ".join(str(n) for n in range(1, int(kw["N"]) + 2)) + "."
        case "count:unique_word_count":
            return " ".join(f"word{n % (int(kw['N']) - 1)}" for n in range(int(kw["N"]) + 5))
        case "format:no_whitespace" | "format:options":
            return "Some words with spaces."
        case "format:parentheses":
            return "(one [two] three)"
        case "format:quotes":
            return "\"He said 'hello' to me\""
        case "format:list":
            return "apples, pears, plums"
        case "sentence:keyword":
            return SENTENCE
        case "format:emoji":
            return "I like tea. I like cake."
    raise AssertionError(f"no breaking response for {instruction_id}")


def official(task: Task, completion: str) -> tuple[list[bool], list[bool]]:
    """The package's own harness on its own record for this row: strict then loose on the same record (as its
    run_eval orders them), Python's `random` seeded by the key once first (the env's one addition)."""
    inp = copy.deepcopy(source()[task.verifier_metadata["key"]])
    responses = {inp.prompt: completion.strip()}
    random.seed(inp.key)
    strict = harness.test_instruction_following_strict(inp, responses).follow_instruction_list
    loose = harness.test_instruction_following_loose(inp, responses).follow_instruction_list
    return strict, loose


def test_the_rows_are_ifbenchs_less_the_ones_needing_nltk_downloads():
    _, tasks = env_and_tasks("ifbench")
    rows = source()
    assert len(rows) == 294 and len(tasks) == 276 and len({t.task_id for t in tasks}) == 276
    left_out = [k for k, r in rows.items() if set(r.instruction_id_list) & set(NEEDS_NLTK_DATA)]
    assert left_out == EXCLUDED
    assert [t.verifier_metadata["key"] for t in tasks] == [k for k in rows if k not in EXCLUDED]
    for t in tasks:
        assert example(t) == rows[t.verifier_metadata["key"]]
    used = {i for t in tasks for i in t.verifier_metadata["instruction_id_list"]}
    # 57 of the registry's 58 types are in the data (custom:character_reverse is in none); 55 once the two go
    assert used | set(NEEDS_NLTK_DATA) == set(INSTRUCTION_DICT) - {"custom:character_reverse"}
    assert len(used) == 55 and not used & set(NEEDS_NLTK_DATA)


def test_responses_that_follow_pass_and_ones_that_break_score_zero():
    env, tasks = env_and_tasks("ifbench")
    passed = collections.Counter()
    for t in tasks:
        meta = t.verifier_metadata
        if len(meta["instruction_id_list"]) != 1:
            continue
        (instruction_id,), (kw,) = meta["instruction_id_list"], meta["kwargs"]
        good = follow(instruction_id, kw)
        if good is None:
            continue
        right = score(env, t, good)
        assert right.reward == 1.0 and right.components == {instruction_id: 1.0}, (t.task_id, good, right)
        wrong = score(env, t, breaking(instruction_id, kw))
        assert wrong.reward == 0.0 and wrong.components == {instruction_id: 0.0}, (t.task_id, wrong)
        assert wrong.info["missed"] == [instruction_id] and not wrong.info["prompt_level_loose"], t.task_id
        passed[instruction_id] += 1
    assert len(passed) == 11 and sum(passed.values()) >= 60, passed
    assert score(env, tasks[0], None).info["reason"] == "no final answer"


def completions(n: int, task: Task) -> list[str]:
    """The prompt itself, a short answer, for a sampled type the instruction followed (in turn plain, after a
    header line, with markdown stars: forms strict and loose read differently) and broken, and for a span to
    repeat the span."""
    meta = task.verifier_metadata
    out = [task.prompt[0].content, "Hmm."]
    for instruction_id, kw in zip(meta["instruction_id_list"], meta["kwargs"], strict=True):
        good = follow(instruction_id, kw)
        if good is not None:
            out += [[good, f"Sure, here it is:\n{good}", good.replace(" ", "** ")][n % 3], breaking(instruction_id, kw)]
        if instruction_id == "repeat:repeat_span":  # row 286's n_start is 0, so its checker draws one at random
            out.append(" ".join(kw["prompt_to_repeat"].split()[kw["n_start"]:kw["n_end"]]))
    return out


def test_verdicts_match_the_package_harness_on_every_row():
    env, tasks = env_and_tasks("ifbench")
    seen = collections.Counter()
    for n, t in enumerate(tasks):
        for completion in completions(n, t):
            strict, loose = official(t, completion)
            result = score(env, t, completion)
            assert (result.info["strict"], result.info["loose"]) == (strict, loose), (t.task_id, completion)
            assert result.reward == float(all(strict))
            seen[(all(strict), all(loose))] += 1
    # a few hundred responses: both verdicts, and some that only the loose check passes
    assert sum(seen.values()) > 650 and seen[(True, True)] > 60 and seen[(False, False)] > 400, seen
    assert seen[(False, True)] > 5, seen


def test_loose_and_partial_credit_options():
    env, tasks = env_and_tasks("ifbench")
    loose = make_env_client("ifbench", env.cfg.model_copy(update={"config": {"loose": True}}))
    partial = make_env_client("ifbench", env.cfg.model_copy(update={"config": {"partial_credit": True}}))
    fractions = []
    for t in tasks:
        meta = t.verifier_metadata
        good = [follow(i, kw) for i, kw in zip(meta["instruction_id_list"], meta["kwargs"], strict=True)]
        if len(good) < 2 or good[0] is None:
            continue
        answer = "Sure, here it is:\n" + good[0]
        strict_list, loose_list = official(t, answer)
        assert score(loose, t, answer).reward == float(all(loose_list))
        result = score(partial, t, answer)
        assert result.reward == pytest.approx(sum(strict_list) / len(strict_list))
        assert result.reward == result.info["instruction_level_strict"]
        fractions.append(result.reward)
    assert any(0 < f < 1 for f in fractions), fractions


def test_bad_rows_raise_a_clear_error():
    env, tasks = env_and_tasks("ifbench")
    t = tasks[0]

    def row(**meta) -> Task:
        return t.model_copy(update={"verifier_metadata": {**t.verifier_metadata, **meta}})

    with pytest.raises(ValueError, match="unknown instruction ids"):
        example(row(instruction_id_list=["format:no_such_check"]))
    with pytest.raises(ValueError, match="1 kwargs for 2 instructions"):
        example(row(instruction_id_list=["format:emoji", "format:quotes"]))
    with pytest.raises(ValueError, match="needs key, instruction_id_list and kwargs"):
        example(t.model_copy(update={"verifier_metadata": {"key": "0"}}))
    stop_words = source()["133"]
    needs_data = row(instruction_id_list=stop_words.instruction_id_list, kwargs=stop_words.kwargs)
    with pytest.raises(ValueError, match="ratio:stop_words needs NLTK's corpora/stopwords"):
        example(needs_data)
    # through the env the row's error is the episode's verify error, not a silent 0
    result = score(env, needs_data, "Some answer.")
    assert result.reward == 0.0 and "ValueError" in result.error and "needs NLTK's corpora/stopwords" in result.error
