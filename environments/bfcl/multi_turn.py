"""Multi-turn BFCL through the package's own executor and checker.

BFCL keeps each test's API instances (file system, trading bot, ...) in its executor module's globals,
named after the model and the test id. Each episode uses names of its own, one set for the live calls the
model sees the results of and one for grading, and drops them when it is done.
"""

from __future__ import annotations

import re
import uuid

from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

from gym_ray import Message

from .tool_format import convert_to_function_call


def is_long_context(category: str) -> bool:
    return "long_context" in category or "composite" in category


def call_string(name: str, arguments: dict) -> str:
    """One call as BFCL's function-calling handlers decode it for execution (`name(k=repr(v), ...)`)."""
    return convert_to_function_call([{name: arguments}])[0]


class Run:
    """One episode's API instances: execute the model's calls live, grade its transcript at the end."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta
        self.key = f"gym_ray_{uuid.uuid4().hex}"

    def execute(self, calls: list[str]) -> list[str]:
        results, _ = execute_multi_turn_func_call(
            calls, self.meta["initial_config"], self.meta["involved_classes"], self.key, self.meta["id"],
            long_context=is_long_context(self.meta["category"]), is_evaL_run=False)
        return results

    def grade(self, turns: list[list[list[str]]]) -> dict:
        """BFCL's verdict on the model's calls, per turn and per reply (`_evaluate_single_multi_turn_entry`)."""
        ground_truth = self.meta["ground_truth"]
        if len(turns) != len(ground_truth):
            return {"valid": False, "error_type": "multi_turn:force_terminated",
                    "error_message": f"the episode ended after {len(turns)} of {len(ground_truth)} turns"}
        entry = {k: self.meta[k] for k in ("id", "initial_config", "involved_classes")}
        return multi_turn_checker(turns, ground_truth, entry, self.meta["category"], f"{self.key}_grade")

    def close(self) -> None:
        prefix = re.sub(r"[-./:]", "_", self.key)
        names = list(vars(multi_turn_utils))  # one copy: other episodes add instances from other threads
        for name in names:
            if name.startswith(prefix):
                vars(multi_turn_utils).pop(name, None)


def model_turns(messages: list[Message], first_turn_messages: int) -> list[list[list[str]]]:
    """The transcript as BFCL's decoded multi-turn result: per turn (each user message after the prompt
    starts one), the call strings of each assistant reply that made calls."""
    turns: list[list[list[str]]] = [[]]
    for m in messages[first_turn_messages:]:
        if m.role == "user":
            turns.append([])
        elif m.role == "assistant" and m.tool_calls:
            turns[-1].append([call_string(c.name, c.arguments) for c in m.tool_calls])
    return turns
