"""The sandbox side of `gym_ray.sandbox.values`, copied into each run as runner.py; never imported.

It loads the solution, computes each test's values and writes them to the original stdout in a strict
by-value encoding after the nonce read from stdin; what the solution prints goes nowhere.
"""

import importlib
import json
import os
import signal
import subprocess
import sys
import traceback

dumps = json.dumps
report_fd = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the solution prints goes nowhere
nonce = sys.stdin.readline().strip()
spec = json.load(open("tests.json"))
per_test, budget = spec["timeout_s"], spec["budget"]
BIG = 1 << 12000  # larger ints travel as hex: json refuses int<->str conversions past 4300 digits
PLAIN = "None, bool, int, float, str, bytes, list, tuple, dict, set or frozenset"


class TestTimeout(BaseException):
    pass


def on_alarm(*_):
    raise TestTimeout()


signal.signal(signal.SIGALRM, on_alarm)


def enc(x):
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -BIG < x < BIG else {"int": format(x, "x")}
    if t is list:
        return [enc(v) for v in x]
    if t is dict:
        return {"dict": [[enc(k), enc(v)] for k, v in x.items()]}
    if t is tuple or t is set or t is frozenset:
        return {t.__name__: [enc(v) for v in x]}
    if t is bytes:
        return {"bytes": x.hex()}
    raise TypeError(f"got a {t.__qualname__}, not a plain value ({PLAIN})")


def short(e):
    return "".join(traceback.format_exception_only(type(e), e)).strip()[-300:]


def timed(fn):
    signal.setitimer(signal.ITIMER_REAL, per_test)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_test(thunks):
    # One test's values under one per-test timer.
    out = []
    signal.setitimer(signal.ITIMER_REAL, per_test)
    try:
        for thunk in thunks:
            try:
                out.append(["ok", enc(thunk())])
            except TestTimeout:
                raise
            except BaseException as e:
                out.append(["err", short(e)])
    except TestTimeout:
        out += [["err", f"timed out after {per_test}s"]] * (len(thunks) - len(out))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return out


def run_program(stdin):
    p = subprocess.Popen([sys.executable, "solution.py"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(stdin.encode(), timeout=per_test)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            pass
        return [["err", f"timed out after {per_test}s"]]
    if p.returncode != 0:
        tail = err.decode(errors="replace").strip()[-300:]
        return [["err", f"exit {p.returncode}: {tail}"]]
    return [["ok", out.decode(errors="replace")]]


def evaluator(ns, expr):
    def thunk():
        for name in expr["modules"]:
            if name not in ns:
                ns[name] = importlib.import_module(name)
        return eval(compile(expr["src"], "<test>", "eval"), ns)
    return thunk


def load_solution(ns):
    try:
        timed(lambda: exec(compile(open("solution.py").read(), "solution.py", "exec"), ns))
    except TestTimeout:
        return "loading the solution timed out"
    except BaseException as e:
        return "loading the solution failed: " + short(e)
    return None


def item_text(item):
    global budget
    try:
        text = dumps(item)
    except (ValueError, RecursionError) as e:
        text = dumps(["err", "cannot report the value: " + short(e)])
    if len(text) > budget:
        text = dumps(["err", f"value too large to report ({len(text)} bytes)"])
    budget -= len(text)
    return text


def main():
    mode, load, results = spec["mode"], None, []
    if mode == "stdio":
        results = [run_program(stdin) for stdin in spec["inputs"]]
    elif mode == "pristine":
        results = [run_test([evaluator({}, e) for e in exprs]) for exprs in spec["tests"]]
    else:
        ns = {"__name__": "solution"}
        load = load_solution(ns)
        fn = ns.get(spec.get("fn_name") or "")
        if load is None and mode == "call" and not callable(fn):
            load = f"the solution defines no function {spec['fn_name']!r}"
        if load is None and mode == "call":
            results = [run_test([lambda args=args: fn(*args)]) for args in spec["inputs"]]
        elif load is None:
            results = [run_test([evaluator(ns, e) for e in exprs]) for exprs in spec["tests"]]
    body = ",".join("[" + ",".join(item_text(i) for i in items) + "]" for items in results)
    data = f'\n{nonce}{{"load": {dumps(load)}, "results": [{body}]}}\n'.encode()
    while data:
        data = data[os.write(report_fd, data):]


main()
