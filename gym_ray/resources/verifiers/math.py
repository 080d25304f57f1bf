"""Math answers checked with math-verify, in a worker process with a timeout.

math-verify parses LaTeX and plain expressions into sympy and compares them symbolically; a
pathological answer can make sympy run for minutes, so every check runs in a scorer worker process
under a timeout of its own run; an answer that overruns it scores 0 (the answer is at fault), with
the reason.
"""

from __future__ import annotations

import logging

from gym_ray.resources.pool import ProcessTimeout
from gym_ray.resources.verifiers.text import last_boxed, strip_think
from gym_ray.resources.verifiers.workers import run_scorer
from gym_ray.types import VerifyResult

MAX_CHARS = 10_000  # only the tail of a long response is parsed: the answer is at the end


def score_math(response: str, expected: str) -> dict:
    """Compare `response` with `expected` (runs in a worker process; importable by name for spawn).

    A `\\boxed{}` answer is taken from the last box only; otherwise math-verify looks for the answer
    in the plain text (`x = 1/2`, `0.5`, `$\\frac12$`).
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # math-verify's own alarms are off (and its warning about that silenced): the worker's timer
    # (workers.timed_call) bounds the whole check instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = parse(f"${expected}$", configs, parsing_timeout=None)
    if not gold:
        gold = parse(f"\\boxed{{{expected}}}", configs, parsing_timeout=None)
    if not gold:
        return {"error": f"the expected answer {expected!r} cannot be parsed"}
    boxed = last_boxed(response)
    pred = parse(f"\\boxed{{{boxed}}}" if boxed is not None else response, configs, parsing_timeout=None)
    if not pred:
        return {"reward": 0.0, "extracted": None, "reason": "no answer found in the response"}
    return {
        "reward": float(verify(gold, pred, timeout_seconds=None)),
        "extracted": str(pred[-1]),
        "from_boxed": boxed is not None,
    }


async def verify_math(response: str, expected: str, *, timeout_s: float = 10.0) -> VerifyResult:
    """Reward 1 when the final answer equals `expected` mathematically, else 0 with a reason."""
    text = strip_think(response).strip()[-MAX_CHARS:]
    if not text:
        return VerifyResult(reward=0.0, info={"reason": "empty response", "expected": expected})
    try:
        out = await run_scorer(score_math, text, str(expected), timeout_s=timeout_s, preload=("math_verify",))
    except ProcessTimeout:
        reason = f"math-verify took longer than {timeout_s} s on this answer"
        return VerifyResult(reward=0.0, info={"reason": reason, "expected": expected, "timeout": True})
    if "error" in out:
        return VerifyResult(error=out["error"], info={"expected": expected})
    info = {"expected": expected, **{k: v for k, v in out.items() if k != "reward"}}
    if out["reward"] == 0.0 and "reason" not in info:
        info["reason"] = f"answer {out['extracted']} does not equal {expected}"
    return VerifyResult(reward=out["reward"], info=info)
