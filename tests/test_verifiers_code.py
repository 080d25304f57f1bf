"""Code answers: the ```python block runs against the task's tests inside the bubblewrap sandbox."""

from __future__ import annotations

import asyncio

import pytest

from gym_ray.resources.verifiers import build_test_spec, verify_code
from gym_ray.sandbox import Sandbox, SandboxLimits

ASSERTS = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]}
CALLS = {"unit_tests": {"fn_name": "add", "inputs": [[1, 2], "3\n4"], "outputs": [3, "7"]}}
STDIO = {"unit_tests": {"inputs": ["1 2\n", "5 6\n"], "outputs": ["3\n", "11"]}}
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxLimits(wall_time_s=10, cpu_time_s=4, memory_mb=256), max_concurrency=2)


def check(sandbox, response, meta, **kw):
    return asyncio.run(verify_code(response, meta, sandbox, **kw))


@pytest.mark.parametrize(("response", "meta"), [(GOOD, ASSERTS), (GOOD, CALLS), (PROGRAM, STDIO)])
def test_right_solution_scores_one(sandbox, response, meta):
    res = check(sandbox, response, meta)
    assert res.reward == 1.0 and res.components == {"pass_rate": 1.0} and res.error is None, res


def test_wrong_solution_scores_zero_with_failures(sandbox):
    res = check(sandbox, "```python\ndef add(a, b):\n    return a - b if a > 0 else a + b\n```", ASSERTS)
    assert res.reward == 0.0 and res.components["pass_rate"] == pytest.approx(1 / 3)
    assert res.info["reason"] == "2 of 3 tests failed" and len(res.info["failures"]) == 2
    res = check(sandbox, "```python\ndef add(a, b):\n    return a * b\n```", CALLS)
    assert res.reward == 0.0 and "expected 3, got 2" in res.info["failures"][0]
    res = check(sandbox, "```python\nprint(42)\n```", STDIO)
    assert res.reward == 0.0 and res.components["pass_rate"] == 0.0


def test_malformed_responses_score_zero_with_reason(sandbox):
    res = check(sandbox, "def add(a, b): return a + b", ASSERTS)
    assert res.reward == 0.0 and res.info["reason"] == "no ```python code block in the response"
    res = check(sandbox, "```python\ndef add(a, b)\n    return a + b\n```", ASSERTS)
    assert res.reward == 0.0 and "SyntaxError" in res.info["failures"][0]
    res = check(sandbox, "```python\ndef plus(a, b):\n    return a + b\n```", CALLS)
    assert res.reward == 0.0 and "defines no function 'add'" in res.info["failures"][0]


def test_hanging_and_hostile_solutions_fail_their_tests(sandbox):
    res = check(
        sandbox, "```python\ndef add(a, b):\n    while True:\n        pass\n```", ASSERTS, test_timeout_s=0.5
    )
    assert res.reward == 0.0 and res.info["failures"] == [f"test {i}: timed out after 0.5s" for i in range(3)]
    exits = "```python\nimport os\nprint('fake report')\nos._exit(0)\n```"
    res = check(sandbox, exits, ASSERTS)
    assert res.reward == 0.0 and "tests did not complete" in res.info["reason"]
    net = "```python\nimport urllib.request\ndef add(a, b):\n    return urllib.request.urlopen('http://1.1.1.1').status\n```"
    res = check(sandbox, net, ASSERTS)
    assert res.reward == 0.0 and res.components["pass_rate"] == 0.0


def test_bad_tests_are_task_errors(sandbox):
    assert check(sandbox, GOOD, {}).error
    assert check(sandbox, GOOD, {"unit_tests": {"inputs": [1], "outputs": []}}).error
    with pytest.raises(ValueError, match="list of assert statements"):
        build_test_spec({"tests": "assert True"}, 1.0)


# Forgeries: the solution attacks the judging itself. Each must score 0, never 1.

FIND_NONCE = (
    "import gc, os, sys\n"
    "def find_nonce():\n"
    "    seen = []\n"
    "    frame = sys._getframe()\n"
    "    while frame is not None:\n"
    "        seen += list(frame.f_locals.values()) + list(frame.f_globals.values())\n"
    "        frame = frame.f_back\n"
    "    for obj in gc.get_objects():\n"
    "        if isinstance(obj, dict):\n"
    "            seen += list(obj.values())\n"
    "    return next(v for v in seen if isinstance(v, str) and v.startswith('@@gym_ray_report_'))\n"
    "def shout(line):\n"
    "    for fd in map(int, os.listdir('/proc/self/fd')):\n"
    "        try:\n"
    "            os.write(fd, line.encode())\n"
    "        except OSError:\n"
    "            pass\n"
)
FORGED = {  # the old harness's all-pass report, and the new one's shape with guessed values
    "old": "'[' + ', '.join(['[true, null]'] * n) + ']'",
    "new": """'{"load": null, "results": [' + ', '.join(['[["ok", true]]'] * n) + ']}'""",
}


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def assert_forgery_fails(res) -> None:
    assert res.reward == 0.0 and res.error is None, res
    assert res.components["pass_rate"] < 1.0, res


@pytest.mark.parametrize("forged", list(FORGED))
@pytest.mark.parametrize("meta", [ASSERTS, CALLS], ids=["asserts", "call"])
def test_stack_walk_nonce_forgery_scores_zero(sandbox, meta, forged):
    """The solution finds the runner's nonce, writes a report to every fd and exits before the real one."""
    code = (
        FIND_NONCE
        + f"def add(a, b):\n    n = {len(meta.get('tests') or meta['unit_tests']['inputs'])}\n    shout('\\n' + find_nonce() + {FORGED[forged]} + '\\n')\n"
    )
    res = check(sandbox, fenced(code + "    os._exit(0)\n"), meta)
    assert_forgery_fails(res)
    if forged == "old":
        assert res.info["reason"] == "the test runner's report is malformed"
    else:
        assert res.info["passed"] == 0 and "got True" in res.info["failures"][0], res.info


@pytest.mark.parametrize("meta", [ASSERTS, CALLS], ids=["asserts", "call"])
def test_always_equal_objects_are_not_values(sandbox, meta):
    code = (
        "class Anything:\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    __hash__ = object.__hash__\n"
        "def add(a, b):\n    return Anything()\n"
    )
    res = check(sandbox, fenced(code), meta)
    assert_forgery_fails(res)
    assert "not a plain value" in res.info["failures"][0]


@pytest.mark.parametrize("base", ["int", "str"])
def test_subclasses_of_plain_types_are_rejected(sandbox, base):
    code = (
        f"class Liar({base}):\n"
        "    def __eq__(self, other):\n        return True\n"
        f"    __hash__ = {base}.__hash__\n"
        f"def add(a, b):\n    return Liar({'0' if base == 'str' else 0})\n"
    )
    for meta in (ASSERTS, CALLS):
        res = check(sandbox, fenced(code), meta)
        assert_forgery_fails(res)
        assert "got a Liar, not a plain value" in res.info["failures"][0]


def test_monkeypatched_json_and_print_forge_nothing(sandbox):
    code = (
        "import builtins, json\n"
        "json.dumps = lambda *a, **k: '[[true, null], [true, null], [true, null]]'\n"
        'json.JSONEncoder.encode = lambda self, o: \'{"load": null, "results": [[["ok", 3]]]}\'\n'
        "builtins.print = lambda *a, **k: None\n"
        "def add(a, b):\n    return 0\n"
    )
    for meta in (ASSERTS, CALLS):
        assert_forgery_fails(check(sandbox, fenced(code), meta))


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos._exit(0)",
        "import sys\nsys.exit(0)",
        "import os\ndef add(a, b):\n    os._exit(0)",
        "import sys\ndef add(a, b):\n    sys.exit(0)",
        "def add(a, b):\n    raise SystemExit(0)",
    ],
)
def test_early_exits_score_zero(sandbox, code):
    for meta in (ASSERTS, CALLS):
        assert_forgery_fails(check(sandbox, fenced(code), meta))


def test_many_fake_reports_score_zero(sandbox):
    code = (
        FIND_NONCE + "def add(a, b):\n"
        "    nonce = find_nonce()\n"
        "    for _ in range(200):\n"
        "        shout('\\n' + nonce + '[[true, null], [true, null], [true, null]]\\n')\n"
        '        shout(\'\\n\' + nonce + \'{"load": null, "results": [[["ok", 3]], [["ok", 0]]]}\\n\')\n'
        "    return a + b\n"
    )
    res = check(sandbox, fenced(code), ASSERTS)
    assert_forgery_fails(res)
    assert "more than one report" in res.info["reason"]


SENTINEL = "SENTINEL-5ee1-c0de"
SEARCH = (
    "import gc, os, re\n"
    "PATTERN = re.compile(rb'SENTINEL-[0-9a-f]{4}-[0-9a-f]{4}')\n"
    "def search_memory(pid):\n"
    "    try:\n"
    "        maps = open(f'/proc/{pid}/maps').read().splitlines()\n"
    "        mem = open(f'/proc/{pid}/mem', 'rb')\n"
    "    except OSError:\n"
    "        return None\n"
    "    for line in maps:\n"
    "        span, perms = line.split()[:2]\n"
    "        start, end = (int(x, 16) for x in span.split('-'))\n"
    "        if perms.startswith('r') and end - start < 1 << 26:\n"
    "            try:\n"
    "                mem.seek(start)\n"
    "                if m := PATTERN.search(mem.read(end - start)):\n"
    "                    return m.group().decode()\n"
    "            except (OSError, ValueError, OverflowError):\n"
    "                pass\n"
    "def search_everything():\n"
    "    blobs = []\n"
    "    for top in ('/work', '/tmp'):\n"
    "        for root, _, names in os.walk(top):\n"
    "            for name in names:\n"
    "                try:\n"
    "                    blobs.append(open(os.path.join(root, name), 'rb').read())\n"
    "                except OSError:\n"
    "                    pass\n"
    "    pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
    "    for pid in pids:\n"
    "        for name in ('cmdline', 'environ'):\n"
    "            try:\n"
    "                blobs.append(open(f'/proc/{pid}/{name}', 'rb').read())\n"
    "            except OSError:\n"
    "                pass\n"
    "    blobs += [repr(o).encode() for o in gc.get_objects() if isinstance(o, (dict, list))]\n"
    "    for blob in blobs:\n"
    "        if m := PATTERN.search(blob):\n"
    "            return m.group().decode()\n"
    "    for pid in pids:\n"
    "        if found := search_memory(pid):\n"
    "            return found\n"
    "    return 'nothing found'\n"
)


@pytest.mark.parametrize(
    "meta",
    [
        {"unit_tests": {"fn_name": "secret", "inputs": [[1]], "outputs": [SENTINEL]}},
        {"tests": [f"assert secret(1) == {SENTINEL!r}"]},
        {"tests": [f"assert secret(1) == str({SENTINEL!r})"]},
    ],
    ids=["call", "assert-literal", "assert-expression"],
)
def test_expected_values_are_nowhere_in_the_sandbox(sandbox, meta):
    """tests.json, every file, /proc/*/cmdline and environ, and the memory of every process in there."""
    code = SEARCH + "def secret(x):\n    return search_everything()\n"
    res = check(sandbox, fenced(code), meta, test_timeout_s=8.0)
    assert_forgery_fails(res)
    assert "nothing found" in res.info["failures"][0], res.info


def test_a_program_cannot_read_the_expected_output_from_its_harness(sandbox):
    meta = {"unit_tests": {"inputs": ["1\n"], "outputs": [SENTINEL + "\n"]}}
    res = check(sandbox, fenced(SEARCH + "print(search_everything())\n"), meta, test_timeout_s=8.0)
    assert_forgery_fails(res)
    assert "nothing found" in res.info["failures"][0], res.info


HOSTILE_ASSERTS = {
    "patched set": (
        "import builtins\nbuiltins.set = lambda *a: frozenset()\ndef common(a, b):\n    return []\n",
        "assert set(common((3, 4, 5), (5, 4))) == set((4, 5))",
    ),
    "patched isclose": (
        "import math\nmath.isclose = lambda *a, **k: True\ndef area(r):\n    return 0.0\n",
        "assert math.isclose(area(1), 3.14159, rel_tol=1e-3)",
    ),
    "object arithmetic": (
        "class Zero:\n    def __sub__(self, other):\n        return 0.0\ndef area(r):\n    return Zero()\n",
        "assert abs(area(2) - 12.566) < 1e-2",
    ),
    "truthy object": (
        "class Yes:\n    def __bool__(self):\n        return True\ndef is_even(n):\n    return Yes()\n",
        "assert is_even(3)",
    ),
    "falsy object": (
        "class No:\n    def __bool__(self):\n        return False\ndef is_even(n):\n    return No()\n",
        "assert not is_even(4)",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE_ASSERTS))
def test_asserts_are_judged_outside_the_solution(sandbox, name):
    code, test = HOSTILE_ASSERTS[name]
    assert_forgery_fails(check(sandbox, fenced(code), {"tests": [test]}))


# Legitimate solutions under the by-value judging.

LEGIT = (
    "import math\n"
    "def common(a, b):\n    return sorted(set(a) & set(b))\n"
    "def area(r):\n    return math.pi * r * r\n"
    "def evens(n):\n    return (i for i in range(0, n, 2))\n"
    "def first(xs):\n    return xs[0] if xs else None\n"
    "def is_even(n):\n    return n % 2 == 0\n"
    "class Stack:\n"
    "    def __init__(self):\n        self.items = []\n"
    "    def push(self, x):\n        self.items.append(x)\n        return self\n"
    "    def peek(self):\n        return self.items[-1]\n"
    "    def __repr__(self):\n        return f'Stack({self.items})'\n"
)
LEGIT_TESTS = [
    "assert set(common((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))",
    "assert math.isclose(area(1), 3.14159, rel_tol=1e-3)",
    "assert abs(area(2) - 12.566) < 1e-2",
    "assert list(evens(5)) == [0, 2, 4]",
    "assert first([]) is None and first([7]) == 7",
    "assert not is_even(3)",
    "assert is_even(4)",
    "assert is_even(4) == True",
    "assert 0 <= first([5]) < 10",
    "assert common([1], [2]) == []",
    "assert [first([i]) for i in range(3)] == [0, 1, 2]",
    "assert all(x % 2 == 0 for x in evens(9))",
    "assert Stack().push(1).peek() == 1",
    "assert str(Stack()) == 'Stack([])'",
    "assert len(common([1, 2], [2, 1])) == 2",
    "assert first(['a']) in ('a', 'b') or first([]) + 1 == 2",
    "assert area(0) == 0.0\nassert first([1]) != 2",
    "assert first([(1, 2)]) == (1, 2) and first([{1: 'a'}]) == {1: 'a'}",
    "assert first([2 ** 5000]) == 2 ** 5000",
    "assert first([b'x']) == b'x' and first([float('inf')]) == float('inf')",
    "assert first([frozenset({1})]) == frozenset({1})",
]


def test_legitimate_asserts_of_many_shapes_pass(sandbox):
    res = check(sandbox, fenced(LEGIT), {"tests": LEGIT_TESTS})
    assert res.reward == 1.0 and res.components == {"pass_rate": 1.0}, res.info


def test_wrong_answers_fail_with_what_the_host_saw(sandbox):
    wrong = LEGIT.replace("return n % 2 == 0", "return n % 2").replace("math.pi * r * r", "3 * r * r")
    res = check(sandbox, fenced(wrong), {"tests": LEGIT_TESTS})
    assert res.reward == 0.0 and res.info["passed"] == len(LEGIT_TESTS) - 5, res.info
    failures = res.info["failures"]
    assert failures[0].startswith("test 1: assertion failed: assert math.isclose(area(1)")
    assert "gave int 1, not a bool" in failures[2] and "(got 0 == True)" in failures[4], failures


def test_oversized_values_fail_only_their_test(sandbox):
    code = GOOD.split("```python\n")[1].split("```")[0] + "def big():\n    return 'x' * (9 << 20)\n"
    res = check(sandbox, fenced(code), {"tests": ["assert add(1, 2) == 3", "assert big() == 'x'"]})
    assert res.components["pass_rate"] == 0.5, res
    assert "value too large to report" in res.info["failures"][0]


@pytest.mark.parametrize(
    "tests",
    [["x = add(1, 2)", "assert x == 3"], ["assert add(1,"], ["def check(f):\n    assert f(1) == 2"]],
)
def test_tests_that_are_not_assert_statements_are_task_errors(sandbox, tests):
    res = check(sandbox, GOOD, {"tests": tests})
    assert res.error and res.error.startswith("bad tests in the task"), res


def test_a_failing_solution_free_operand_is_a_task_error(sandbox):
    res = check(sandbox, GOOD, {"tests": ["assert add(1, 2) == int('three')"]})
    assert res.error and "failed without the solution" in res.error and "ValueError" in res.error, res
