"""Code answers: extract the model's ```python block and judge it by value, outside its process.

Three test shapes, all in `verifier_metadata`:
- `tests: ["assert f(1) == 2", ...]`: assert statements;
- `unit_tests: {fn_name, inputs, outputs}`: call `fn_name(*args)` per input and compare with the output
  (an input is an argument list with a plain output, or LiveCodeBench's string of one JSON value per
  line with a JSON-text output);
- `unit_tests: {inputs, outputs}` without `fn_name`: the solution is a program, fed stdin, stdout compared.

The sandbox only computes values and never holds an expected one: the sandbox's test runner
(`gym_ray.sandbox.values`) loads the solution, calls the function (or runs the program, or evaluates the
asserts' operands) and reports each value in a strict by-value encoding (exact plain types; a subclass or
any other object is an error for that test). `verify_code` compares the decoded values with the
expectations only it holds. Whatever the solution does inside (walk the stack, patch builtins or json, print fake
reports, exit early, read every file and /proc), what comes back is values, which pass only if right.
The report carries a per-run nonce so that a second report (the solution's own) fails the run.

Asserts are split on the host with `ast`: `and`/`or`/`not`, comparisons (`==`, `!=`, `<`, `in`, `is`,
chained), `math.isclose(a, b, rel_tol=, abs_tol=)`, `abs(x)`, `x + y` and `x - y` are applied here to
the decoded operands. An operand that is a literal never leaves the host; one that uses no name of the
solution (`set((4, 5))`, `list(range(3))`) is evaluated in a second sandbox run without the solution,
so the solution never sees it either; one that uses the solution (`f(1)`, `sorted(f(x))`) is evaluated
in the solution's run. A bare `assert X` needs X to be exactly True, `assert not X` exactly False.
Forgeable, by construction: a non-comparison `assert X` over the solution is computed in its process,
so when X itself checks the result (`all(f(x) == 2 * x for x in r)`, `f(s).startswith("a")`,
`isinstance(f(x), int)`) a solution can make it True; so can one whose both operands call it
(`f(1) == f(2) - 1`). A test that is not only assert statements is a bad test spec.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import json
import math
import operator
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from gym_ray.resources.verifiers.text import last_code_block, strip_think
from gym_ray.sandbox import Sandbox, SandboxLimits
from gym_ray.sandbox.values import Values, run_values
from gym_ray.types import VerifyResult

_BUILTINS = frozenset(dir(builtins))
_STDLIB = frozenset(sys.stdlib_module_names)
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)
_VALUE_BUDGET = 4 << 20  # bytes of reported values on top of 4x the expected ones


class TestSpecError(ValueError):
    """The task's tests are malformed (a data problem, reported as a verifier error)."""


class _Fail(Exception):
    """A test failed; the message says how."""


@dataclass(frozen=True)
class _Leaf:
    """An operand: a literal kept here, or an expression that one sandbox run evaluates."""

    run: Literal["lit", "sol", "pri"]  # sol: the solution's run; pri: the run without the solution
    ref: Any  # the literal, or the expression's index in that run's list for this test
    src: str


@dataclass(frozen=True)
class _Arith:
    """`abs(x)`, `x + y` or `x - y`, applied here to decoded operands."""

    op: Literal["abs", "Add", "Sub"]
    args: tuple
    src: str


@dataclass(frozen=True)
class _Check:
    """A verdict the host computes: and/or/not over sub-checks, or a comparison over operands."""

    kind: Literal["all", "any", "not", "cmp", "isclose", "truth"]
    args: tuple  # sub-checks (all, any, not) or operands (cmp, isclose, truth)
    src: str
    ops: tuple[str, ...] = ()  # cmp: ast operator names, one between each two operands
    options: tuple = ()  # isclose: (name, value) keywords


@dataclass(frozen=True)
class _AssertTest:
    """One `tests` entry: its check, and the expressions each of the two sandbox runs evaluates."""

    src: str
    check: _Check
    sol: list[dict]  # {src, modules}: what the solution's run evaluates
    pri: list[dict]  # what the run without the solution evaluates


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _free_names(node: ast.AST) -> tuple[set[str], set[str]]:
    """(names the solution provides, stdlib modules used as `module.attr`) in an expression."""
    bound = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {n.arg for n in ast.walk(node) if isinstance(n, ast.arg)}  # lambda parameters
    module_refs = {
        id(n.value) for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    names, modules = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound:
            if n.id in _STDLIB and id(n) in module_refs:
                modules.add(n.id)
            elif n.id not in _BUILTINS:
                names.add(n.id)
    return names, modules


def _isclose_options(node: ast.AST) -> tuple | None:
    """The keywords of `math.isclose(a, b, rel_tol=<literal>, abs_tol=<literal>)`, else None."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "isclose"
        and _is_name(node.func.value, "math")
        and len(node.args) == 2
        and all(k.arg in ("rel_tol", "abs_tol") for k in node.keywords)
    ):
        return None
    try:
        return tuple((k.arg, ast.literal_eval(k.value)) for k in node.keywords)
    except _LITERAL_ERRORS:
        return None


class _Planner:
    """Split one test into checks judged here and the expressions each sandbox run evaluates."""

    def __init__(self) -> None:
        self.sol: list[dict] = []
        self.pri: list[dict] = []

    def check(self, node: ast.expr) -> _Check:
        src = ast.unparse(node)
        if isinstance(node, ast.BoolOp):
            kind = "all" if isinstance(node.op, ast.And) else "any"
            return _Check(kind, tuple(self.check(v) for v in node.values), src)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Check("not", (self.check(node.operand),), src)
        if isinstance(node, ast.Compare):
            operands = tuple(self.value(n) for n in (node.left, *node.comparators))
            return _Check("cmp", operands, src, ops=tuple(type(op).__name__ for op in node.ops))
        if (options := _isclose_options(node)) is not None:
            return _Check("isclose", tuple(self.value(a) for a in node.args), src, options=options)
        return _Check("truth", (self.value(node),), src)

    def value(self, node: ast.expr) -> _Leaf | _Arith:
        src = ast.unparse(node)
        try:
            return _Leaf("lit", ast.literal_eval(node), src)
        except _LITERAL_ERRORS:
            pass
        if (
            isinstance(node, ast.Call)
            and _is_name(node.func, "abs")
            and len(node.args) == 1
            and not node.keywords
        ):
            return _Arith("abs", (self.value(node.args[0]),), src)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            return _Arith(type(node.op).__name__, (self.value(node.left), self.value(node.right)), src)
        names, modules = _free_names(node)
        run = self.sol if names else self.pri
        run.append({"src": src, "modules": sorted(modules)})
        return _Leaf("sol" if names else "pri", len(run) - 1, src)


def _plan_assert(src: str, index: int) -> _AssertTest:
    try:
        body = ast.parse(src).body
    except SyntaxError as e:
        raise TestSpecError(f"tests[{index}] is not valid Python: {e.msg}") from None
    if not body or not all(isinstance(s, ast.Assert) for s in body):
        raise TestSpecError(f"tests[{index}]: only assert statements are supported, got {src[:100]!r}")
    planner = _Planner()
    checks = tuple(planner.check(s.test) for s in body)
    check = checks[0] if len(checks) == 1 else _Check("all", checks, src)
    return _AssertTest(src, check, planner.sol, planner.pri)


@dataclass
class TestSpec:
    """A task's tests, split into what the sandbox computes and what only the host holds."""

    mode: Literal["asserts", "call", "stdio"]
    timeout_s: float
    inputs: list = field(default_factory=list)  # call: argument lists; stdio: stdin texts
    expected: list = field(default_factory=list)  # call: return values; stdio: stdout texts
    fn_name: str | None = None
    asserts: list[_AssertTest] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.asserts) if self.mode == "asserts" else len(self.inputs)

    @property
    def expected_bytes(self) -> int:
        if self.mode == "asserts":
            return sum(len(t.src) for t in self.asserts)
        return sum(len(json.dumps(e)) for e in self.expected)

    def runner_input(self, run: Literal["sol", "pri"]) -> tuple[dict, list[int]]:
        """The runner's tests.json for one run (inputs or expressions only) and its values per test."""
        base = {"timeout_s": self.timeout_s}
        if self.mode == "asserts":
            tests = [t.sol if run == "sol" else t.pri for t in self.asserts]
            mode = "eval" if run == "sol" else "pristine"
            return {**base, "mode": mode, "tests": tests}, [len(t) for t in tests]
        inputs = {"mode": self.mode, "inputs": self.inputs, "fn_name": self.fn_name}
        return {**base, **inputs}, [1] * len(self)


def _parse_lcb_input(raw: str) -> list:
    """LiveCodeBench functional inputs: one JSON value per line, one line per argument."""
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def build_test_spec(meta: dict, timeout_s: float) -> TestSpec:
    """Normalize a task's tests (see module doc) into a `TestSpec`; raise `TestSpecError`."""
    if meta.get("tests"):
        tests = meta["tests"]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise TestSpecError("verifier_metadata.tests: expected a list of assert statements (strings)")
        return TestSpec("asserts", timeout_s, asserts=[_plan_assert(t, i) for i, t in enumerate(tests)])
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
        return TestSpec("stdio", timeout_s, [str(i) for i in inputs], [str(o) for o in outputs])
    try:
        # A string input is LiveCodeBench's encoding, whose output is JSON text too; else plain values.
        args = [_parse_lcb_input(i) if isinstance(i, str) else list(i) for i in inputs]
        expected = [json.loads(o) if isinstance(i, str) else o for i, o in zip(inputs, outputs, strict=True)]
    except (json.JSONDecodeError, TypeError) as e:
        raise TestSpecError(f"unit_tests: inputs/outputs are not JSON values: {e}") from None
    return TestSpec("call", timeout_s, args, expected, fn_name=unit["fn_name"])


def _same(a: Any, b: Any) -> bool:
    """Equality by value: floats within 1e-6 relative, lists and tuples alike."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = (int, float)
        return (
            isinstance(a, numbers)
            and isinstance(b, numbers)
            and math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
        )
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _identical(a: Any, b: Any) -> bool:
    """`is` between decoded values: the same type and value (identity does not cross processes)."""
    return type(a) is type(b) and a == b


_COMPARE = {
    "Eq": _same,
    "NotEq": lambda a, b: not _same(a, b),
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
    "Is": _identical,
    "IsNot": lambda a, b: not _identical(a, b),
}
_OP_TEXT = {"Eq": "==", "NotEq": "!=", "Lt": "<", "LtE": "<=", "Gt": ">", "GtE": ">=", "In": "in"}
_OP_TEXT |= {"NotIn": "not in", "Is": "is", "IsNot": "is not"}
_HOST_ERRORS = (TypeError, ValueError, OverflowError, MemoryError, RecursionError)


class _Judge:
    """Evaluate one assert's checks over its decoded operands."""

    def __init__(self, sol: list[tuple[bool, Any]], pri: list[tuple[bool, Any]]) -> None:
        self.sol, self.pri, self.notes = sol, pri, []

    def value(self, node: _Leaf | _Arith) -> Any:
        if isinstance(node, _Leaf):
            if node.run == "lit":
                return node.ref
            ok, value = (self.sol if node.run == "sol" else self.pri)[node.ref]
            if not ok:
                raise _Fail(value)
            return value
        args = [self.value(a) for a in node.args]
        try:
            return abs(args[0]) if node.op == "abs" else getattr(operator, node.op.lower())(*args)
        except _HOST_ERRORS as e:
            raise _Fail(f"{node.src}: {type(e).__name__}: {e}") from None

    def truth(self, check: _Check) -> bool:
        if check.kind == "all":
            return all(self.truth(c) for c in check.args)
        if check.kind == "any":
            errors = []
            for c in check.args:
                try:
                    if self.truth(c):
                        return True
                except _Fail as e:
                    errors.append(e)
            if errors:
                raise errors[0]
            return False
        if check.kind == "not":
            return not self.truth(check.args[0])
        values = [self.value(v) for v in check.args]
        try:
            if check.kind == "isclose":
                return math.isclose(*values, **dict(check.options))
            if check.kind == "truth":
                if type(values[0]) is not bool:
                    raise _Fail(f"{check.src} gave {type(values[0]).__name__} {values[0]!r:.100}, not a bool")
                return values[0]
            for op, a, b in zip(check.ops, values, values[1:], strict=False):
                if not _COMPARE[op](a, b):
                    self.notes.append(f"{a!r:.100} {_OP_TEXT[op]} {b!r:.100}")
                    return False
            return True
        except _HOST_ERRORS as e:
            raise _Fail(f"{check.src}: {type(e).__name__}: {e}") from None


def _judge_assert(test: _AssertTest, sol: list, pri: list) -> str | None:
    """None when the test passed, else how it failed."""
    judge = _Judge(sol, pri)
    try:
        if judge.truth(test.check):
            return None
    except _Fail as e:
        return str(e)
    got = f" (got {judge.notes[0]})" if judge.notes else ""
    return f"assertion failed: {test.src[:200]}{got}"


def _judge_call(expected: Any, item: tuple[bool, Any]) -> str | None:
    ok, got = item
    if not ok:
        return got
    try:
        got = json.loads(json.dumps(got))  # the expected output is JSON: tuples are lists, keys strings
    except (TypeError, ValueError, RecursionError):
        return f"returned a {type(got).__name__}, which no JSON output equals"
    return None if _same(got, expected) else f"expected {expected!r:.200}, got {got!r:.200}"


def _judge_stdio(expected: str, item: tuple[bool, Any]) -> str | None:
    ok, out = item
    if not ok:
        return out
    if type(out) is not str:
        return "the test runner reported no text"

    def norm(s: str) -> list[str]:
        return [line.rstrip() for line in s.strip().splitlines()]

    return None if norm(out) == norm(expected) else f"expected {expected[:200]!r}, got {out[:200]!r}"


async def _evaluate(
    sandbox: Sandbox, spec: TestSpec, run: Literal["sol", "pri"], code: str, limits: SandboxLimits
) -> Values:
    """One sandbox run of the runner; the solution's file is only there for the `sol` run."""
    tests, counts = spec.runner_input(run)
    return await run_values(sandbox, tests, counts, budget=_VALUE_BUDGET + 4 * spec.expected_bytes,
                            solution=code if run == "sol" else None, limits=limits)


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
    n = len(spec)
    limits = limits or sandbox.limits
    limits = limits.model_copy(update={"wall_time_s": max(limits.wall_time_s, n * test_timeout_s + 5)})
    runs = [_evaluate(sandbox, spec, "sol", code, limits)]
    if any(t.pri for t in spec.asserts):
        runs.append(_evaluate(sandbox, spec, "pri", code, limits))
    sol_run, *pri_run = await asyncio.gather(*runs)
    pri = pri_run[0].values if pri_run else [[] for _ in spec.asserts]
    if pri_run and pri_run[0].no_report:
        return VerifyResult(
            error=f"bad tests in the task: their solution-free part failed: {pri_run[0].no_report}"
        )
    for test, items in zip(spec.asserts, pri, strict=True):
        for expr, (ok, err) in zip(test.pri, items, strict=True):
            if not ok:
                return VerifyResult(
                    error=f"bad tests in the task: {expr['src']!r} failed without the solution: {err}"
                )
    res = sol_run.res
    info: dict = {"sandbox_status": res.status.value, "num_tests": n}
    if sol_run.no_report:
        info.update(reason=sol_run.no_report, stderr=res.stderr[-1000:])
        return VerifyResult(reward=0.0, components={"pass_rate": 0.0}, info=info)
    sol = sol_run.values
    if sol_run.load_error is not None:
        failures = [sol_run.load_error] * n
    elif spec.mode == "asserts":
        failures = [_judge_assert(t, s, p) for t, s, p in zip(spec.asserts, sol, pri, strict=True)]
    elif spec.mode == "call":
        failures = [_judge_call(e, items[0]) for e, items in zip(spec.expected, sol, strict=True)]
    else:
        failures = [_judge_stdio(e, items[0]) for e, items in zip(spec.expected, sol, strict=True)]
    failed = [f"test {i}: {why}" for i, why in enumerate(failures) if why is not None]
    passed = n - len(failed)
    info.update(passed=passed)
    if failed:
        info.update(reason=f"{len(failed)} of {n} tests failed", failures=failed[:5])
    return VerifyResult(reward=float(passed == n), components={"pass_rate": passed / n}, info=info)
