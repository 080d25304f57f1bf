"""Code answers: extract the model's ```python block and run the task's tests in the sandbox.

Three test shapes, all in `verifier_metadata`:
- `tests: ["assert f(1) == 2", ...]`: statements run after the solution, in its namespace;
- `unit_tests: {fn_name, inputs, outputs}`: call `fn_name(*args)` per input and compare with the output
  (an input is an argument list with a plain output, or LiveCodeBench's string of one JSON value per
  line with a JSON-text output);
- `unit_tests: {inputs, outputs}` without `fn_name`: the solution is a program, fed stdin, stdout compared.

All tests of one answer run in one sandbox process (a harness inside the sandbox, stdlib only), each
with its own timeout. The harness reads a per-run nonce from stdin before the solution is loaded and
tags its report with it, so output printed by the solution cannot pass for the report.
"""

from __future__ import annotations

import json
import secrets

from gym_ray.resources.sandbox import Sandbox, SandboxLimits
from gym_ray.resources.verifiers.text import last_code_block, strip_think
from gym_ray.types import VerifyResult

_HARNESS = r"""
import contextlib, io, json, math, os, signal, subprocess, sys, traceback

spec = json.load(open("tests.json"))
per_test = spec["timeout_s"]


class TestTimeout(BaseException):
    pass


def on_alarm(*_):
    raise TestTimeout()


signal.signal(signal.SIGALRM, on_alarm)


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def short(e):
    return "".join(traceback.format_exception_only(type(e), e)).strip()[-300:]


def run_one(fn):
    signal.setitimer(signal.ITIMER_REAL, per_test)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main():
    nonce = sys.stdin.readline().strip()  # local: the solution cannot print a report
    results = []
    mode = spec["mode"]
    if mode == "stdio":
        norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]
        for inp, exp in zip(spec["inputs"], spec["outputs"]):
            try:
                p = subprocess.run([sys.executable, "solution.py"], input=inp, capture_output=True, text=True,
                                   timeout=per_test)
                if p.returncode != 0:
                    results.append([False, "exit %d: %s" % (p.returncode, p.stderr.strip()[-300:])])
                elif norm(p.stdout) != norm(exp):
                    results.append([False, "expected %r, got %r" % (exp[:200], p.stdout[:200])])
                else:
                    results.append([True, None])
            except subprocess.TimeoutExpired:
                results.append([False, "timed out after %ss" % per_test])
    else:
        ns = {"__name__": "solution"}
        load_error = None
        try:
            run_one(lambda: exec(compile(open("solution.py").read(), "solution.py", "exec"), ns))
        except TestTimeout:
            load_error = "loading the solution timed out"
        except BaseException as e:
            load_error = "loading the solution failed: " + short(e)
        cases = spec["tests"] if mode == "asserts" else list(zip(spec["inputs"], spec["outputs"]))
        fn = ns.get(spec.get("fn_name") or "")
        if load_error is None and mode == "call" and not callable(fn):
            load_error = "the solution defines no function %r" % spec["fn_name"]
        for case in cases:
            if load_error is not None:
                results.append([False, load_error])
                continue
            try:
                if mode == "asserts":
                    run_one(lambda: exec(case, ns))
                    results.append([True, None])
                else:
                    args, expected = case
                    got = run_one(lambda: fn(*args))
                    got = json.loads(json.dumps(got, default=repr))
                    ok = same(got, expected)
                    results.append([ok, None if ok else "expected %r, got %r" % (expected, got)])
            except TestTimeout:
                results.append([False, "timed out after %ss" % per_test])
            except BaseException as e:
                results.append([False, short(e)])
    os.write(1, ("\n" + nonce + json.dumps(results) + "\n").encode())


main()
"""


class TestSpecError(ValueError):
    """The task's tests are malformed (a data problem, reported as a verifier error)."""


def _parse_lcb_input(raw: str) -> list:
    """LiveCodeBench functional inputs: one JSON value per line, one line per argument."""
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def build_test_spec(meta: dict, timeout_s: float) -> dict:
    """Normalize a task's tests (see module doc) into the harness's spec; raise `TestSpecError`."""
    if meta.get("tests"):
        tests = meta["tests"]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise TestSpecError("verifier_metadata.tests: expected a list of assert statements (strings)")
        return {"mode": "asserts", "tests": tests, "timeout_s": timeout_s}
    unit = meta.get("unit_tests")
    if isinstance(unit, str):
        unit = json.loads(unit)
    if not isinstance(unit, dict) or "inputs" not in unit or "outputs" not in unit:
        raise TestSpecError(
            "verifier_metadata: expected `tests` (asserts) or `unit_tests: {inputs, outputs}`"
        )
    inputs, outputs = unit["inputs"], unit["outputs"]
    if len(inputs) != len(outputs) or not inputs:
        raise TestSpecError(f"unit_tests: {len(inputs)} inputs for {len(outputs)} outputs")
    if not unit.get("fn_name"):
        return {
            "mode": "stdio",
            "inputs": [str(i) for i in inputs],
            "outputs": [str(o) for o in outputs],
            "timeout_s": timeout_s,
        }
    try:
        # A string input is LiveCodeBench's encoding, whose output is JSON text too; else plain values.
        args = [_parse_lcb_input(i) if isinstance(i, str) else list(i) for i in inputs]
        expected = [json.loads(o) if isinstance(i, str) else o for i, o in zip(inputs, outputs, strict=True)]
    except (json.JSONDecodeError, TypeError) as e:
        raise TestSpecError(f"unit_tests: inputs/outputs are not JSON values: {e}") from None
    return {
        "mode": "call",
        "fn_name": unit["fn_name"],
        "inputs": args,
        "outputs": expected,
        "timeout_s": timeout_s,
    }


async def verify_code(
    response: str,
    meta: dict,
    sandbox: Sandbox,
    *,
    test_timeout_s: float = 4.0,
    limits: SandboxLimits | None = None,
) -> VerifyResult:
    """Reward 1 when every test passes; component `pass_rate` is the fraction that did."""
    code = last_code_block(strip_think(response))
    if code is None or not code.strip():
        return VerifyResult(reward=0.0, info={"reason": "no ```python code block in the response"})
    try:
        spec = build_test_spec(meta, test_timeout_s)
    except (TestSpecError, json.JSONDecodeError) as e:
        return VerifyResult(error=f"bad tests in the task: {e}")
    n = len(spec.get("tests") or spec.get("inputs"))
    limits = limits or sandbox.limits
    limits = limits.model_copy(update={"wall_time_s": max(limits.wall_time_s, n * test_timeout_s + 5)})
    nonce = f"@@gym_ray_report_{secrets.token_hex(16)}@@"
    res = await sandbox.run(
        [sandbox.python, "harness.py"],
        files={"solution.py": code, "harness.py": _HARNESS, "tests.json": json.dumps(spec)},
        stdin=nonce + "\n",
        limits=limits,
    )
    info: dict = {"sandbox_status": res.status.value, "num_tests": n}
    reports = [line[len(nonce) :] for line in res.stdout.splitlines() if line.startswith(nonce)]
    if len(reports) != 1:
        why = res.detail or "the test harness produced no report"
        return VerifyResult(
            reward=0.0,
            components={"pass_rate": 0.0},
            info={**info, "reason": f"tests did not complete: {why}", "stderr": res.stderr[-1000:]},
        )
    results = json.loads(reports[0])
    passed = sum(1 for ok, _ in results if ok)
    failures = [f"test {i}: {err}" for i, (ok, err) in enumerate(results) if not ok]
    info.update(passed=passed)
    if failures:
        info.update(reason=f"{len(failures)} of {n} tests failed", failures=failures[:5])
    return VerifyResult(reward=float(passed == n), components={"pass_rate": passed / n}, info=info)
