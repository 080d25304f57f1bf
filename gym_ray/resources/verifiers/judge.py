"""LLM-as-judge: a model decides whether an answer matches the reference answer.

The judge is any `PolicyClient` (its `chat` call), often the same deployment as the policy. When the
judge cannot give a verdict (the call fails, or its reply has no verdict) the result carries `error`,
so the rollout is reported as `env_error` and masked instead of being trained on as a wrong answer.
"""

from __future__ import annotations

import re

from gym_ray.clients import PolicyClient
from gym_ray.config import SamplingConfig
from gym_ray.errors import FailureKind
from gym_ray.resources.verifiers.text import strip_think
from gym_ray.types import Message, VerifyResult

JUDGE_PROMPT = """You are grading a student's answer against the reference answer.

Question:
{question}

Reference answer:
{reference}

Student's answer:
{answer}

Is the student's final answer equivalent to the reference answer (same value or meaning; ignore \
wording, formatting and any working shown)? Explain briefly, then end with exactly one verdict on its \
own line: [[CORRECT]] or [[INCORRECT]]."""

_VERDICT = re.compile(r"\[\[\s*(CORRECT|INCORRECT)\s*\]\]", re.I)
_VERDICT_LINE = re.compile(r"^\W*verdict\W*(correct|incorrect)\W*$", re.I | re.M)


def parse_verdict(text: str) -> bool | None:
    """True/False from the last `[[CORRECT]]`/`[[INCORRECT]]` (or a `Verdict: ...` line); None if absent."""
    text = strip_think(text)
    found = _VERDICT.findall(text) or _VERDICT_LINE.findall(text)
    return found[-1].upper() == "CORRECT" if found else None


def _content(completion: dict) -> str:
    try:
        return completion["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"not a chat completion: {str(completion)[:200]}") from None


async def verify_with_judge(
    question: str,
    answer: str,
    reference: str,
    judge: PolicyClient,
    *,
    sampling: SamplingConfig | None = None,
    prompt: str = JUDGE_PROMPT,
) -> VerifyResult:
    """Reward 1 for a `[[CORRECT]]` verdict, 0 for `[[INCORRECT]]`; `error` when there is no verdict."""
    answer = strip_think(answer).strip()
    if not answer:
        return VerifyResult(reward=0.0, info={"reason": "empty answer"})
    text = prompt.format(question=question, reference=reference, answer=answer)
    sampling = sampling or SamplingConfig(temperature=0.0, max_tokens=512)
    try:
        reply = _content(await judge.chat([Message(role="user", content=text)], None, sampling))
    except Exception as e:  # any failure of the judge call is the environment's, not the answer's
        return VerifyResult(error=f"judge call failed: {type(e).__name__}: {e}")
    verdict = parse_verdict(reply)
    info = {"judge_model": getattr(judge, "model_name", ""), "judge_output": reply[-2000:]}
    if verdict is None:
        return VerifyResult(error="the judge's reply has no [[CORRECT]]/[[INCORRECT]] verdict", info=info,
                            error_kind=FailureKind.BAD_OUTPUT)
    if not verdict:
        info["reason"] = "the judge ruled the answer incorrect"
    return VerifyResult(reward=float(verdict), info=info)
