"""Answer extraction, multiple-choice grading and the LLM judge (no processes, no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from gym_ray.clients import PolicyClient
from gym_ray.config import SamplingConfig
from gym_ray.resources.verifiers import (
    extract_choice,
    last_boxed,
    last_code_block,
    parse_verdict,
    strip_think,
    verify_mcqa,
    verify_with_judge,
)


def test_last_boxed_balances_braces_and_takes_the_last():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed(r"\fbox{ 7 }") == "7"
    assert last_boxed(r"no box here") is None
    assert last_boxed(r"\boxed{unclosed") is None


def test_strip_think_keeps_only_the_answer():
    assert strip_think("<think>\\boxed{9}</think>The answer is 4").strip() == "The answer is 4"
    assert strip_think("reasoning...</think>final").strip() == "final"
    assert strip_think("answer <think>never closed").strip() == "answer"


def test_last_code_block_prefers_python_fences():
    text = "```text\nnot code\n```\n```python\ndef f():\n    return 1\n```\n```bash\nls\n```"
    assert last_code_block(text) == "def f():\n    return 1\n"
    assert last_code_block("```\nx = 1\n```") == "x = 1\n"
    assert last_code_block("no fences") is None


@pytest.mark.parametrize(
    ("response", "strict", "lenient"),
    [
        (r"Reasoning... so \boxed{B}", "B", "B"),
        (r"\boxed{\text{C}}", "C", "C"),
        ("Thinking.\nAnswer: D", "D", "D"),
        ("**Answer:** (A)", "A", "A"),
        ("I think the answer is (B).", None, "B"),
        ("C", None, "C"),
        (r"\boxed{Paris}", None, "B"),  # the option text instead of its letter
        (r"\boxed{Z}", None, None),  # not an option
        ("no idea", None, None),
        (r"\boxed{A} ... wait, \boxed{C}", "C", "C"),
        ("The answer is a bit unclear to me.", None, None),
        ("My answer: (d)", None, "D"),
    ],
)
def test_extract_choice_strict_and_lenient(response, strict, lenient):
    options = [{"A": "London"}, {"B": "Paris"}, {"C": "Rome"}, {"D": "Berlin"}]
    assert extract_choice(response, "strict", options) == strict
    assert extract_choice(response, "lenient", options) == lenient


def test_verify_mcqa_scores_and_explains():
    right = verify_mcqa(r"\boxed{B}", "b")
    assert right.reward == 1.0 and right.info["extracted_answer"] == "B" and right.error is None
    wrong = verify_mcqa(r"\boxed{A}", "B")
    assert wrong.reward == 0.0 and "chose A, expected B" in wrong.info["reason"]
    malformed = verify_mcqa("the answer is B", "B", "strict")
    assert malformed.reward == 0.0 and "no answer found" in malformed.info["reason"]
    assert verify_mcqa("the answer is B", "B", "lenient").reward == 1.0
    assert verify_mcqa(r"\boxed{B}", "B", "fuzzy").error  # a bad grading_mode is a task error


class FakeJudge:
    """A `PolicyClient` whose chat replies are scripted (or raise)."""

    model_name = "fake-judge"

    def __init__(self, reply: str | Exception):
        self.reply = reply
        self.prompts: list[str] = []

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        raise NotImplementedError

    async def chat(self, messages, tools, sampling):
        self.prompts.append(messages[-1].content)
        if isinstance(self.reply, Exception):
            raise self.reply
        return {"choices": [{"message": {"role": "assistant", "content": self.reply}}]}

    def tokenizer_path(self) -> str:
        return ""


def judge(reply, answer="Paris"):
    client = FakeJudge(reply)
    assert isinstance(client, PolicyClient)
    res = asyncio.run(
        verify_with_judge("Capital of France?", answer, "Paris", client, sampling=SamplingConfig())
    )
    return res, client


def test_parse_verdict():
    assert parse_verdict("It matches.\n[[CORRECT]]") is True
    assert parse_verdict("[[CORRECT]] hmm no\n[[ incorrect ]]") is False
    assert parse_verdict("Verdict: correct") is True
    assert parse_verdict("<think>[[INCORRECT]]</think> Looks fine. [[CORRECT]]") is True
    assert parse_verdict("I am not sure") is None


def test_judge_correct_and_incorrect():
    res, client = judge("Same city.\n[[CORRECT]]")
    assert res.reward == 1.0 and res.error is None and res.info["judge_model"] == "fake-judge"
    assert "Capital of France?" in client.prompts[0] and "Reference answer:\nParis" in client.prompts[0]
    res, _ = judge("Different city.\n[[INCORRECT]]", answer="Lyon")
    assert res.reward == 0.0 and res.error is None and "incorrect" in res.info["reason"]


def test_judge_failures_are_errors_not_zero():
    res, _ = judge(ConnectionError("judge endpoint down"))
    assert res.error and "judge call failed" in res.error and "judge endpoint down" in res.error
    res, _ = judge("I cannot decide.")
    assert res.error and "no [[CORRECT]]/[[INCORRECT]] verdict" in res.error
    assert res.info["judge_output"] == "I cannot decide."


def test_judge_empty_answer_is_zero_without_calling_the_judge():
    res, client = judge("[[CORRECT]]", answer="<think>hmm</think>  ")
    assert res.reward == 0.0 and res.error is None and client.prompts == []
