"""Shared verifier functions: plain (async) functions an environment's `verify` calls.

Each returns a `VerifyResult`: reward 1/0 (or partial) with `info["reason"]` when not full, and
`error` set only when the verifier itself failed (bad task data, a judge without a verdict).
"""

from gym_ray.resources.verifiers.code import build_test_spec, verify_code
from gym_ray.resources.verifiers.judge import JUDGE_PROMPT, parse_verdict, verify_with_judge
from gym_ray.resources.verifiers.math import verify_math
from gym_ray.resources.verifiers.mcqa import extract_choice, verify_mcqa
from gym_ray.resources.verifiers.reasoning_gym import extract_answer, verify_reasoning_gym
from gym_ray.resources.verifiers.text import last_boxed, last_code_block, last_tag, strip_think

__all__ = [
    "JUDGE_PROMPT",
    "build_test_spec",
    "extract_answer",
    "extract_choice",
    "last_boxed",
    "last_code_block",
    "last_tag",
    "parse_verdict",
    "strip_think",
    "verify_code",
    "verify_math",
    "verify_mcqa",
    "verify_reasoning_gym",
    "verify_with_judge",
]
