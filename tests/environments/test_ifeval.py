"""ifeval: every instruction's check accepts what follows it and rejects what does not; a scripted writer
that follows every task's instructions scores 1.0 on all 40 tasks, a response breaking one scores 0."""

from __future__ import annotations

import json

import pytest
from env_helpers import env_and_tasks, score
from gym_ray_env_ifeval.checks import INSTRUCTIONS, follows, words

from gym_ray.resources.client import make_env_client

FILLER = "the story goes on with calm steps and clear words".split()


def write(instructions: list[dict]) -> str:
    """A response that follows `instructions` (the scripted policy of this env), built from their kwargs."""
    spec = {i["id"]: i.get("kwargs") or {} for i in instructions}
    has = spec.__contains__
    parts = ["Here is my note."]
    if has("detectable_format:title"):
        parts.insert(0, "<<A short note>>")
    if has("keywords:existence"):
        parts.append("It names " + " and ".join(spec["keywords:existence"]["keywords"]) + ".")
    if has("detectable_format:number_bullet_lists"):
        count = spec["detectable_format:number_bullet_lists"]["num_bullets"]
        parts.append("\n" + "\n".join(f"* point{n}" for n in range(count)) + "\n")
    tail = []
    if has("detectable_content:postscript"):
        tail.append(f"\n{spec['detectable_content:postscript']['postscript_marker']} see you soon.")
    if has("startend:end_checker"):
        tail.append(spec["startend:end_checker"]["end_phrase"])
    length = spec.get("length_constraints:number_words")
    if length and length["relation"] == "at least":
        count = len(words(" ".join(parts + tail)))
        parts.append(" ".join((FILLER * 20)[: max(0, length["num_words"] - count + 5)]) + ".")
    n = spec.get("detectable_format:number_paragraphs", {}).get("num_paragraphs")
    body = [" ".join(parts + tail)] if not n else [*parts[: n - 1], " ".join(parts[n - 1:] + tail) or "The end."]
    while n and len(body) < n:
        body.insert(-1, "More words follow here.")
    text = "\n***\n".join(body) if n else body[0]
    if has("detectable_format:json_format"):
        text = json.dumps({"text": text})
    if has("change_case:english_lowercase"):
        text = text.lower()
    if has("change_case:english_capital"):
        text = text.upper()
    if has("startend:quotation"):
        text = f'"{text}"'
    return text


def breaking(instruction_id: str, kwargs: dict) -> str:
    """A response that does not follow the instruction."""
    return {
        "length_constraints:number_words": "Too short." if kwargs.get("relation") == "at least"
        else " ".join(["word"] * (kwargs.get("num_words", 0) + 5)),
        "detectable_format:number_bullet_lists": "No bullets here.",
        "keywords:existence": "Nothing relevant.",
        "keywords:forbidden_words": " ".join(kwargs.get("forbidden_words", [])),
        "change_case:english_lowercase": "Some Capital Letters.",
        "change_case:english_capital": "some lowercase letters.",
        "detectable_format:title": "No title at all.",
        "startend:end_checker": "The end is elsewhere. Or not.",
        "punctuation:no_comma": "One, two.",
        "detectable_format:number_paragraphs": "Only one paragraph.",
        "detectable_content:postscript": "No postscript.",
        "startend:quotation": "Not quoted.",
        "detectable_format:json_format": "Not JSON.",
    }[instruction_id]


@pytest.mark.parametrize("instruction_id", sorted(INSTRUCTIONS))
def test_each_check_accepts_and_rejects(instruction_id):
    _, tasks = env_and_tasks("ifeval")
    seen = [i for t in tasks for i in t.verifier_metadata["instructions"] if i["id"] == instruction_id]
    assert seen, f"no task uses {instruction_id}"
    for instruction in seen:
        kwargs = instruction["kwargs"]
        assert follows(instruction_id, kwargs, write([instruction])), (instruction, write([instruction]))
        assert not follows(instruction_id, kwargs, breaking(instruction_id, kwargs)), instruction


def test_the_scripted_writer_scores_one_and_breaking_one_instruction_scores_zero():
    env, tasks = env_and_tasks("ifeval")
    assert len(tasks) == 40 and {len(t.verifier_metadata["instructions"]) for t in tasks} == {1, 2, 3}
    for t in tasks:
        instructions = t.verifier_metadata["instructions"]
        right = score(env, t, write(instructions))
        assert right.reward == 1.0, (t.prompt[0].content, write(instructions), right.components)
        assert right.components == {i["id"]: 1.0 for i in instructions}
        first = instructions[0]
        wrong = score(env, t, breaking(first["id"], first["kwargs"]))
        assert wrong.reward == 0.0 and wrong.components[first["id"]] == 0.0
        assert first["id"] in wrong.info["missed"]
    assert score(env, tasks[0], None).info["reason"] == "no final answer"


def test_partial_credit_is_the_fraction_followed():
    env, tasks = env_and_tasks("ifeval")
    partial = make_env_client("ifeval", env.cfg.model_copy(update={"config": {"partial_credit": True}}))
    fractions = []
    for t in tasks:
        instructions = t.verifier_metadata["instructions"]
        answer = write(instructions[1:]) if len(instructions) > 1 else breaking(instructions[0]["id"], {})
        followed = [follows(i["id"], i["kwargs"], answer) for i in instructions]
        result, strict = score(partial, t, answer), score(env, t, answer)
        assert result.reward == pytest.approx(sum(followed) / len(followed)) == result.info["instruction_level"]
        assert strict.reward == float(all(followed))
        fractions.append(result.reward)
    assert any(0 < f < 1 for f in fractions)  # partial credit where some, not all, are followed
