"""BFCL v4 (the Berkeley Function Calling Leaderboard), graded by BFCL's own checkers.

Single-turn rows: the task's functions are its tools; the first reply's tool calls are BFCL's decoded
output, graded by BFCL's AST checker against the possible answers (irrelevance rows pass with no call,
relevance rows with one). The calls are recorded, never run, as in BFCL.

Multi-turn rows: the calls run on the package's API classes and their results go back to the model; when
the model answers without a call, `step` ends the turn and gives the next user message (and, in
miss_func, the functions added at that turn). BFCL's multi-turn checker then replays the model's calls
and the ground truth turn by turn on fresh instances and compares state and results. The agent for them
is `gym_ray_env_bfcl.agent:MultiTurnAgent`.
"""

from __future__ import annotations

from bfcl_eval.constants.enums import Language
from bfcl_eval.utils import is_empty_output, is_java, is_js, is_multi_turn, is_relevance_or_irrelevance

from gym_ray import ResourceServer, StepResult, Task, VerifyResult

from .ast_checker import ast_checker
from .multi_turn import Run, call_string, model_turns
from .tasks import expand_categories, load_tasks

RECORDED = "Recorded. BFCL grades this call as written; it is not run."


def language(category: str) -> Language:
    return Language.JAVA if is_java(category) else Language.JAVASCRIPT if is_js(category) else Language.PYTHON


def first_reply_calls(task: Task, messages: list) -> list[dict]:
    """The first assistant reply's calls in BFCL's decoded form, `[{name: {param: value}}, ...]`."""
    reply = next((m for m in messages[len(task.prompt):] if m.role == "assistant"), None)
    return [{c.name: c.arguments} for c in (reply.tool_calls or [])] if reply is not None else []


def single_turn_verdict(meta: dict, decoded: list[dict]) -> dict:
    """BFCL's verdict on one single-turn reply (`_evaluate_single_relevance_entry` / `_ast_entry`)."""
    category = meta["category"]
    if is_relevance_or_irrelevance(category):
        called = not is_empty_output(decoded)
        return {"valid": called != ("irrelevance" in category),
                "error_type": "irrelevance_error:decoder_success" if called else "relevance_error:decoder_failed"}
    return ast_checker(meta["function"], decoded, meta["ground_truth"], language(category), category, "gym_ray")


class BFCL(ResourceServer):
    verifier = "BFCL's AST checker on the tool calls; irrelevance: no call; multi-turn: BFCL's state and result checker"
    origin = "bfcl-eval==2026.3.23 (Apache-2.0)"
    metric = "accuracy"

    def __init__(self, categories: str | list[str] = "single_turn") -> None:
        self.categories = expand_categories(categories)

    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        return load_tasks(env, self.categories, limit)

    def seed(self, task: Task) -> dict:
        meta = task.verifier_metadata
        if not is_multi_turn(meta["category"]):
            return {}
        return {"run": Run(meta), "turn": 0}

    def forward_tool(self, name: str, arguments: dict) -> str:
        run = self.state.get("run")
        if run is None:
            return RECORDED
        return run.execute([call_string(name, arguments)])[0]

    def step(self, action: str) -> StepResult:
        """The model answered without a call: the turn is over. The next user message, or done."""
        turns = self.task.verifier_metadata.get("turns", [])
        self.state["turn"] = turn = self.state.get("turn", 0) + 1
        if turn >= len(turns):
            return StepResult(done=True)
        added = self.task.verifier_metadata["added_tools"].get(str(turn), [])
        return StepResult(observation="\n".join(m["content"] for m in turns[turn]), info={"added_tools": added})

    def verify(self, task: Task, messages: list) -> VerifyResult:
        meta = task.verifier_metadata
        if is_multi_turn(meta["category"]):
            verdict = self.state["run"].grade(model_turns(messages, len(task.prompt)))
        else:
            verdict = single_turn_verdict(meta, first_reply_calls(task, messages))
        reward = float(verdict["valid"])
        info = {"category": meta["category"]}
        if not verdict["valid"]:
            info |= {"error_type": verdict.get("error_type", ""), "error": str(verdict.get("error_message")
                                                                                 or verdict.get("error", ""))[:500]}
        return VerifyResult(reward=reward, components={meta["category"]: reward}, info=info)

    def close(self) -> None:
        run = self.state.get("run") if isinstance(self.state, dict) else None
        if run is not None:
            run.close()
