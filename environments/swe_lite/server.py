"""swe_lite: fix a bug in a small Python repository. The repository lives in the episode's session; the
model reads and edits it with file tools and runs commands on a copy of it in the bubblewrap sandbox;
`verify` runs the visible and the hidden unit tests there: reward 1 only when all pass."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from gym_ray import ResourceServer, VerifyResult, tool
from gym_ray.sandbox import Sandbox, SandboxLimits

_RAN = re.compile(r"^Ran (\d+) tests?", re.M)
_FAILED = re.compile(r"^FAILED \((.*)\)", re.M)


def _path(path: str) -> str:
    p = PurePosixPath(path.strip().removeprefix("./"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"{path!r}: give a path inside the repository, e.g. 'stats.py'")
    return str(p)


def test_counts(output: str) -> tuple[int, int]:
    """(tests run, tests failed or errored) from unittest's summary."""
    ran = _RAN.search(output)
    failed = _FAILED.search(output)
    bad = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", failed.group(1))) if failed else 0
    return (int(ran.group(1)) if ran else 0), bad


class SweLite(ResourceServer):
    verifier = "visible + hidden unit tests in the bubblewrap sandbox"
    origin = "native (generated repositories)"
    metric = "pass@k"

    def __init__(self, max_output_chars: int = 4000, max_concurrency: int = 4, limits: dict | None = None) -> None:
        self.sandbox = Sandbox(SandboxLimits(**(limits or {})), max_concurrency=max_concurrency)
        self.max_output_chars = max_output_chars

    def seed(self, task):
        return {"files": dict(task.verifier_metadata["files"]), "edits": 0}

    @tool
    def list_files(self) -> str:
        """List the repository's files."""
        return "\n".join(sorted(self.state["files"]))

    @tool
    def read_file(self, path: str) -> str:
        """Show a file of the repository.

        Args:
            path: The file's path in the repository, e.g. "stats.py".
        """
        path = _path(path)
        if path not in self.state["files"]:
            raise FileNotFoundError(f"no file {path!r}; the files are: {', '.join(sorted(self.state['files']))}")
        return self.state["files"][path]

    @tool
    def edit_file(self, path: str, old: str, new: str) -> str:
        """Replace one exact occurrence of `old` with `new` in a file.

        Args:
            path: The file's path in the repository.
            old: The exact text to replace; it must occur exactly once.
            new: The replacement text.
        """
        text = self.read_file(path)
        count = text.count(old)
        if count != 1:
            raise ValueError(f"`old` occurs {count} times in {path}; it must occur exactly once")
        self.state["files"][_path(path)] = text.replace(old, new)
        self.state["edits"] += 1
        return f"Edited {_path(path)}."

    @tool
    def write_file(self, path: str, content: str) -> str:
        """Create or overwrite a file.

        Args:
            path: The file's path in the repository.
            content: The whole new content.
        """
        self.state["files"][_path(path)] = content
        self.state["edits"] += 1
        return f"Wrote {_path(path)} ({len(content)} characters)."

    @tool
    async def run(self, command: str) -> str:
        """Run a shell command in a fresh copy of the repository (a sandbox: no network; file changes made
        by the command are not kept, edit with edit_file / write_file), e.g. "python3 -m unittest".

        Args:
            command: The shell command.
        """
        result = await self.sandbox.run(["/bin/sh", "-c", command], files=self.state["files"])
        output = (result.stdout + result.stderr)[-self.max_output_chars:]
        return f"exit code {result.exit_code} ({result.status.value})\n{output}"

    async def verify(self, task, messages):
        files = {**self.state["files"], **task.verifier_metadata["hidden_tests"]}
        result = await self.sandbox.run(["/usr/bin/python3", "-m", "unittest", "-q"], files=files)
        output = result.stdout + result.stderr
        ran, bad = test_counts(output)
        passed = result.ok and ran > 0 and bad == 0
        components = {"tests_passed": float(passed), "passed_fraction": (ran - bad) / ran if ran else 0.0,
                      "edited": float(self.state["edits"] > 0)}
        info = {"tests_run": ran, "tests_failed": bad}
        if not passed:
            info["reason"] = f"unit tests: {result.status.value}, {bad} of {ran} failed: {output[-600:]}"
        return VerifyResult(reward=float(passed), components=components, info=info)
