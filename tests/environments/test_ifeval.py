"""ifeval: the 541 official rows; completions built to follow one instruction pass and ones built to break it
score 0; on every row the env's strict and loose verdicts equal those of the package's own harness."""

from __future__ import annotations

import collections
import json
import random
from importlib.resources import files

import pytest
from env_helpers import env_and_tasks, score
from eval_framework.tasks.ifeval import evaluation as harness
from eval_framework.tasks.ifeval.instructions_registry import INSTRUCTION_DICT
from eval_framework.utils import strip_think_tags
from gym_ray_env_ifeval.server import example

from gym_ray.resources.client import make_env_client

SENTENCE = "The garden was quiet in the early morning light and the birds sang softly."


def _without(letter: str) -> str:
    return next(w for w in ("hmm", "yes", "okay", "123") if letter.lower() not in w)


def follow(instruction_id: str, kw: dict, prompt: str) -> str:
    """A response that follows one instruction, built from its kwargs."""
    match instruction_id.split(":")[1]:
        case "capital_word_frequency":
            return SENTENCE.lower() if kw["capital_relation"] == "less than" else "WORD " * kw["capital_frequency"]
        case "english_capital":
            return SENTENCE.upper()
        case "english_lowercase":
            return SENTENCE.lower()
        case "repeat_prompt":
            return kw["prompt_to_repeat"] + "\n\n" + SENTENCE
        case "two_responses":
            return "First answer here.\n******\nSecond answer there."
        case "number_placeholders":
            return SENTENCE + " " + " ".join(f"[slot{n}]" for n in range(kw["num_placeholders"]))
        case "postscript":
            return f"{SENTENCE}\n\n{kw['postscript_marker']} Thanks for reading."
        case "constrained_response":
            return "My answer is yes."
        case "json_format":
            return '```json\n{"answer": "yes"}\n```'
        case "multiple_sections":
            return "\n\n".join(f"{kw['section_spliter']} {n + 1}\n{SENTENCE}" for n in range(kw["num_sections"]))
        case "number_bullet_lists":
            return "\n".join(f"* point {n}" for n in range(kw["num_bullets"]))
        case "number_highlighted_sections":
            return " ".join(f"*part {n}*" for n in range(kw["num_highlights"]))
        case "title":
            return f"<<A Quiet Morning>>\n{SENTENCE}"
        case "existence":
            return " ".join(kw["keywords"]) + "."
        case "forbidden_words":
            return "Hmm."
        case "frequency":
            many = kw["relation"] == "at least"
            return " ".join([kw["keyword"]] * kw["frequency"]) if many else "Hmm."
        case "letter_frequency":
            many = kw["let_relation"] == "at least"
            return kw["letter"] * kw["let_frequency"] if many else _without(kw["letter"])
        case "nth_paragraph_first_word":
            return "\n\n".join(f"{kw['first_word']} begins this one." if n + 1 == kw["nth_paragraph"] else SENTENCE
                               for n in range(kw["num_paragraphs"]))
        case "number_paragraphs":
            return "\n***\n".join([SENTENCE] * kw["num_paragraphs"])
        case "number_sentences":
            many = kw["relation"] == "at least"
            return " ".join(["This is one sentence."] * (kw["num_sentences"] if many else 1))
        case "number_words":
            return " ".join(["word"] * kw["num_words"]) if kw["relation"] == "at least" else "A short answer."
        case "no_comma":
            return SENTENCE
        case "end_checker":
            return f"{SENTENCE} {kw['end_phrase']}"
        case "quotation":
            return f'"{SENTENCE}"'
    raise AssertionError(f"no completion for {instruction_id}")


def breaking(instruction_id: str, kw: dict) -> str:
    """A response that breaks one instruction."""
    match instruction_id.split(":")[1]:
        case "capital_word_frequency":
            return SENTENCE.lower() if kw["capital_relation"] == "at least" else "WORD " * kw["capital_frequency"]
        case "english_capital" | "two_responses" | "title" | "repeat_prompt" | "json_format" | "quotation":
            return SENTENCE
        case "english_lowercase":
            return SENTENCE.upper()
        case "number_placeholders" | "postscript" | "constrained_response" | "multiple_sections":
            return "Hmm."
        case "number_bullet_lists":  # three more: the loose check may drop the first and last lines
            return "\n".join(f"* point {n}" for n in range(kw["num_bullets"] + 3))
        case "number_highlighted_sections" | "existence" | "nth_paragraph_first_word" | "end_checker":
            return "Hmm."
        case "forbidden_words":
            return " ".join(kw["forbidden_words"])
        case "frequency":
            many = kw["relation"] == "at least"
            return " ".join([kw["keyword"]] * (kw["frequency"] - 1 if many else kw["frequency"])) or "Hmm."
        case "letter_frequency":
            many = kw["let_relation"] == "at least"
            return kw["letter"] * (kw["let_frequency"] - 1 if many else kw["let_frequency"]) or _without(kw["letter"])
        case "number_paragraphs":
            return "\n***\n".join([SENTENCE] * (kw["num_paragraphs"] + 3))
        case "number_sentences":
            many = kw["relation"] == "at least"
            return " ".join(["This is one sentence."] * (kw["num_sentences"] - 1 if many else kw["num_sentences"]))
        case "number_words":
            return "A short answer." if kw["relation"] == "at least" else " ".join(["word"] * kw["num_words"])
        case "no_comma":
            return "One, two."
        case "response_language":
            return SENTENCE
    raise AssertionError(f"no completion for {instruction_id}")


def official(task, completion: str) -> tuple[list[bool], list[bool]]:
    """The package's own harness: its strict and loose verdicts for `completion` (prepared as it prepares),
    with Python's `random` seeded by the row key before each (the env's one addition, see `seeded`)."""
    inp = example(task)
    responses = {inp.prompt: strip_think_tags(completion.strip())}
    verdicts = []
    for check in (harness.test_instruction_following_strict, harness.test_instruction_following_loose):
        random.seed(inp.key)
        verdicts.append(check(inp, responses).follow_instruction_list)
    return verdicts[0], verdicts[1]


def test_the_rows_are_ifevals_541_prompts():
    _, tasks = env_and_tasks("ifeval")
    source = harness.read_prompt_list(str(files("eval_framework.tasks.ifeval") / "data" / "input_data.jsonl"))
    assert len(tasks) == len(source) == 541 and len({t.task_id for t in tasks}) == 541
    for t, inp in zip(tasks, source, strict=True):
        assert example(t) == inp
    used = {i for t in tasks for i in t.verifier_metadata["instruction_id_list"]}
    assert used == set(INSTRUCTION_DICT) and len(used) == 25


def test_completions_that_follow_pass_and_ones_that_break_score_zero():
    env, tasks = env_and_tasks("ifeval")
    single = [t for t in tasks if len(t.verifier_metadata["instruction_id_list"]) == 1]
    passed = collections.Counter()
    for t in single:
        (instruction_id,), (kw,) = t.verifier_metadata["instruction_id_list"], t.verifier_metadata["kwargs"]
        if instruction_id != "language:response_language":  # no writer of 22 languages here
            right = score(env, t, follow(instruction_id, kw, t.prompt[0].content))
            assert right.reward == 1.0 and right.components == {instruction_id: 1.0}, (t.task_id, right)
            passed[instruction_id] += 1
        if instruction_id == "language:response_language" and kw["language"] == "en":
            continue
        wrong = score(env, t, breaking(instruction_id, kw))
        assert wrong.reward == 0.0 and wrong.components == {instruction_id: 0.0}, (t.task_id, wrong)
        assert wrong.info["missed"] == [instruction_id] and not wrong.info["prompt_level_loose"], t.task_id
    assert len(passed) == 24 and sum(passed.values()) >= 270  # every type but the language one, ~275 rows
    assert score(env, tasks[0], None).info["reason"] == "no final answer"


def completions(n: int, task) -> list[str]:
    """The first instruction followed (in turn plain, after a header line, after a `<think>` block, with
    markdown stars: forms strict and loose read differently) and broken; the second one followed."""
    meta = task.verifier_metadata
    pairs = list(zip(meta["instruction_id_list"], meta["kwargs"], strict=True))
    out = [breaking(*pairs[0])]
    for instruction_id, kw in pairs[:2]:
        if instruction_id != "language:response_language":
            good = follow(instruction_id, kw, task.prompt[0].content)
            out.append([good, f"Sure, here it is:\n{good}", f"<think>plan it</think>\n{good}",
                        good.replace(" ", "** ")][n % 4])
    return out


def test_verdicts_match_the_package_harness_on_every_row():
    env, tasks = env_and_tasks("ifeval")
    seen = collections.Counter()
    for n, t in enumerate(tasks):
        for completion in completions(n, t):
            strict, loose = official(t, completion)
            result = score(env, t, completion)
            if not completion.strip():  # the package's harness fails every instruction of an empty response
                assert result.info["reason"] == "no final answer" and not any(strict + loose)
                continue
            assert (result.info["strict"], result.info["loose"]) == (strict, loose), (t.task_id, completion)
            assert result.reward == float(all(strict))
            seen[(all(strict), all(loose))] += 1
    # both verdicts on many rows, and rows that only the loose check passes
    assert seen[(True, True)] > 200 and seen[(False, False)] > 500 and seen[(False, True)] > 30, seen


def test_loose_and_partial_credit_options():
    env, tasks = env_and_tasks("ifeval")
    loose = make_env_client("ifeval", env.cfg.model_copy(update={"config": {"loose": True}}))
    partial = make_env_client("ifeval", env.cfg.model_copy(update={"config": {"partial_credit": True}}))
    fractions = []
    for t in tasks[:200]:
        meta = t.verifier_metadata
        if len(meta["instruction_id_list"]) < 2 or meta["instruction_id_list"][0] == "language:response_language":
            continue
        answer = "Sure, here it is:\n" + follow(meta["instruction_id_list"][0], meta["kwargs"][0], t.prompt[0].content)
        strict_list, loose_list = official(t, answer)
        assert score(loose, t, answer).reward == float(all(loose_list))
        result = score(partial, t, answer)
        assert result.reward == pytest.approx(sum(strict_list) / len(strict_list)) == result.info["instruction_level_strict"]
        fractions.append(result.reward)
    assert any(0 < f < 1 for f in fractions)


def test_a_repeated_instruction_gets_one_component_each():
    env, tasks = env_and_tasks("ifeval")
    t = next(t for t in tasks if len(set(ids := t.verifier_metadata["instruction_id_list"])) < len(ids))
    result = score(env, t, "Hmm.")
    assert len(result.components) == len(t.verifier_metadata["instruction_id_list"])
    assert any("#2" in name for name in result.components), json.dumps(result.components)
