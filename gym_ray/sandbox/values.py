"""Values computed in the sandbox, reported by value: the host side of the test runner (`programs/runner.py`).

The runner loads a solution (when the run has one), calls a function per input, runs a program per stdin,
or evaluates expressions, and writes each value to its original stdout in a strict by-value encoding
(exact plain types, large ints as hex; a subclass or any other object is an error for that value) after a
per-run nonce it reads from stdin; what the solution prints goes nowhere. Here the report is decoded back
into plain values. The runner never holds an expected value, so whatever the solution does inside (walk the
stack, patch builtins or json, print fake reports, exit early), what comes back is values; a second report
(the solution's own) fails the run.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from gym_ray.sandbox.limits import SandboxLimits, SandboxResult
from gym_ray.sandbox.run import Sandbox

RUNNER = files(__package__).joinpath("programs", "runner.py").read_text()  # copied into each run as runner.py
_ITEM_BYTES = 512  # an error message and the framing of one reported value
_REPORT_SLACK = 64 << 10  # the solution's stderr, the nonce


@dataclass(frozen=True)
class Values:
    """One run of the runner: why it gave no report, or the solution's load error, or per test its values
    as `(True, value)` or `(False, error text)`."""

    res: SandboxResult
    no_report: str | None = None
    load_error: str | None = None
    values: list = field(default_factory=list)


class _NoReport(Exception):
    """A sandbox run gave no usable report; the message says why."""


async def run_values(sandbox: Sandbox, tests: dict, counts: list[int], *, budget: int, solution: str | None,
                     limits: SandboxLimits) -> Values:
    """Run the runner on `tests` (its tests.json: `mode`, `timeout_s` and the inputs or expressions) with
    `solution` as solution.py (None: a run without it); `counts` is how many values each test reports, and
    `budget` the bytes of reported values in all (a value past what is left fails its test). The run's
    output limit is raised to fit the budget."""
    output = budget + _ITEM_BYTES * sum(counts) + _REPORT_SLACK
    limits = limits.model_copy(update={"max_output_bytes": max(limits.max_output_bytes, output)})
    run_files = {"runner.py": RUNNER, "tests.json": json.dumps({**tests, "budget": budget})}
    if solution is not None:
        run_files["solution.py"] = solution
    nonce = f"@@gym_ray_report_{secrets.token_hex(16)}@@"
    res = await sandbox.run([sandbox.python, "runner.py"], files=run_files, stdin=nonce + "\n", limits=limits)
    try:
        load_error, values = _parse_report(res, nonce, counts)
    except _NoReport as e:
        return Values(res, no_report=str(e))
    return Values(res, load_error=load_error, values=values)


def _decode(x: Any) -> Any:
    """The runner's by-value encoding back into plain values; anything else is a forged report."""
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is list:
        return [_decode(v) for v in x]
    if type(x) is dict and len(x) == 1:
        ((tag, v),) = x.items()
        if tag == "int" and type(v) is str:
            return int(v, 16)
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if type(v) is list and tag in ("tuple", "set", "frozenset"):
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](_decode(w) for w in v)
        if type(v) is list and tag == "dict" and all(type(p) is list and len(p) == 2 for p in v):
            return {_decode(k): _decode(w) for k, w in v}
    raise ValueError("not a value of the runner's encoding")


def _decode_item(item: Any) -> tuple[bool, Any]:
    if type(item) is list and len(item) == 2:
        if item[0] == "ok":
            return True, _decode(item[1])
        if item[0] == "err" and type(item[1]) is str:
            return False, item[1][:300]
    raise ValueError("not a reported value")


def _parse_report(res: SandboxResult, nonce: str, counts: list[int]) -> tuple[str | None, list]:
    """(the solution's load error, or per test its [(ok, value or error)]); raise `_NoReport`."""
    lines = [line[len(nonce) :] for line in res.stdout.split("\n") if line.startswith(nonce)]
    if len(lines) != 1:
        why = "more than one report: the solution wrote its own" if lines else res.detail
        raise _NoReport(f"tests did not complete: {why or 'the test runner produced no report'}")
    try:
        body = json.loads(lines[0])
        load, results = body["load"], body["results"]
        if load is not None:
            if type(load) is not str:
                raise ValueError("load error")
            return load[:300], []
        if type(results) is not list or [len(r) if type(r) is list else -1 for r in results] != counts:
            raise ValueError("results")
        return None, [[_decode_item(i) for i in items] for items in results]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise _NoReport("the test runner's report is malformed") from None
