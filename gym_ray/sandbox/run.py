"""Run untrusted code (model-written programs, unit tests) under bubblewrap, and collect what it printed.

Every run gets fresh namespaces (no network: only a private loopback), a read-only view of the system
directories and nothing else of the host (no home, no project, no host /tmp), a private in-memory work
dir, and rlimits on CPU time, address space, processes, file size and open files (`bwrap.py`), plus a
wall-clock timeout that kills the whole process group. When the program's main process ends, bwrap's
PID 1 ends and the kernel kills whatever it forked, so nothing outlives a run.

Memory is bounded twice: RLIMIT_AS per process, and `total_memory_mb` for the whole sandbox, by a per-run
memory cgroup where one can be created, else by a watchdog (`memory.py`; `Sandbox.memory_bound` says
which). Output past `max_output_bytes` kills the run too; `limits.classify` names what happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from gym_ray import meter
from gym_ray.sandbox.bwrap import HOST_ENV, Launcher, SandboxUnavailable, work_files
from gym_ray.sandbox.limits import MemoryBound, SandboxLimits, SandboxResult, classify
from gym_ray.sandbox.memory import own_memory_cgroups, tree_memory
from gym_ray.sandbox.process import spawn

_READ_CHUNK = 1 << 16
_DRAIN_S = 5.0  # after the kill, how long the pipes may take to close
_MEMORY_POLL_S = 0.05


class Sandbox:
    """Bounded-concurrency async runner of commands inside bubblewrap.

    `python` is the interpreter `run_python` uses; it must live under the system directories (the
    default `python3` is the system one, which has no access to the project's virtualenv).
    `use_cgroups=False` bounds `total_memory_mb` with the watchdog even where a cgroup would work.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        max_concurrency: int = 4,
        python: str = "/usr/bin/python3",
        bwrap: str = "bwrap",
        use_cgroups: bool = True,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.max_concurrency = max_concurrency
        self.python = python
        self._launcher = Launcher.find(bwrap)
        self._cgroups = own_memory_cgroups() if use_cgroups else None
        self.memory_bound: MemoryBound = self._cgroups.kind if self._cgroups else "watchdog"
        if self._cgroups is None and not Path(f"/proc/self/task/{os.getpid()}/children").exists():
            raise SandboxUnavailable(
                "no memory cgroup can be created here and /proc/<pid>/task/<tid>/children "
                "(CONFIG_PROC_CHILDREN) is missing, so total_memory_mb cannot be enforced"
            )
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._check_works()

    def _check_works(self) -> None:
        """Fail at start-up (not on the first verify) when namespaces (or the cgroup) do not work here."""
        cgroup = self._cgroups.create(self.limits.total_memory_mb << 20) if self._cgroups else None
        argv, fds = self._launcher.argv(["/bin/true"], {}, self.limits, self._launcher.pick_uid(), {}, cgroup)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, pass_fds=fds, env=HOST_ENV, cwd="/"
            )
        finally:
            for fd in fds:
                os.close(fd)
            deadline = time.monotonic() + _DRAIN_S
            while cgroup and not self._cgroups.try_remove(cgroup) and time.monotonic() < deadline:
                time.sleep(0.01)
        if proc.returncode != 0:
            raise SandboxUnavailable(
                f"bubblewrap cannot create a sandbox here (exit {proc.returncode}): {proc.stderr.strip()}"
            )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return sem

    async def run_python(
        self,
        code: str,
        *,
        stdin: str | bytes | None = None,
        files: dict[str, str | bytes] | None = None,
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        """Run `code` as `/work/main.py` with the sandbox's interpreter."""
        return await self.run(
            [self.python, "main.py"], stdin=stdin, files={**(files or {}), "main.py": code}, limits=limits
        )

    async def run(
        self,
        command: list[str],
        *,
        stdin: str | bytes | None = None,
        files: dict[str, str | bytes] | None = None,
        limits: SandboxLimits | None = None,
        env: dict[str, str] | None = None,
        ro_binds: dict[str, str] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> SandboxResult:
        """Run `command` in /work (holding `files`, paths relative to it); never raises for the program's faults.
        `ro_binds` (host path -> path inside) shows host directories read-only, e.g. a socket to one server;
        `on_start(pid)` learns the host pid of the sandbox (every process of the run descends from it)."""
        if not command:
            raise ValueError("command must not be empty")
        limits = limits or self.limits
        files_in = work_files(files or {})
        async with self._semaphore():
            cgroup = self._cgroups.create(limits.total_memory_mb << 20) if self._cgroups else None
            fds: list[int] = []
            try:
                argv, fds = self._launcher.argv(command, files_in, limits, self._launcher.pick_uid(), env or {},
                                                cgroup, ro_binds)
                return await self._execute(argv, fds, stdin, limits, cgroup, on_start)
            finally:
                for fd in fds:
                    os.close(fd)
                deadline = time.monotonic() + _DRAIN_S
                while cgroup and not self._cgroups.try_remove(cgroup) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)

    def _cpu_seconds(self, cgroup: Path | None, reaped_s: float) -> float:
        """CPU of the whole run: a cgroup v2's `cpu.stat`, else what bwrap's rusage holds (bwrap does not
        reap the namespace's init, so there it is bwrap's own CPU only)."""
        if cgroup is not None and self.memory_bound == "cgroup-v2":
            try:
                for line in (cgroup / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
            except (OSError, ValueError):
                pass
        return reaped_s

    def _over_memory(self, cgroup: Path | None, pid: int, limits: SandboxLimits) -> Callable[[], bool]:
        if cgroup is not None:
            return lambda: self._cgroups.oom_kills(cgroup) > 0
        return lambda: tree_memory(pid) > limits.total_memory_mb << 20

    async def _execute(
        self,
        argv: list[str],
        fds: list[int],
        stdin: str | bytes | None,
        limits: SandboxLimits,
        cgroup: Path | None,
        on_start: Callable[[int], None] | None = None,
    ) -> SandboxResult:
        start = time.monotonic()
        proc = await spawn(
            argv,
            env=HOST_ENV,
            stdin=stdin is not None,
            pass_fds=tuple(fds),
            cwd="/",  # sh exports PWD, which would name the host's working directory
            on_start=on_start,
        )
        out, err = bytearray(), bytearray()
        budget = [limits.max_output_bytes]
        over, memory_over = asyncio.Event(), asyncio.Event()
        over_memory = self._over_memory(cgroup, proc.pid, limits)
        if stdin is not None:
            proc.feed(stdin.encode() if isinstance(stdin, str) else stdin)

        async def pump(stream: asyncio.StreamReader, buf: bytearray) -> None:
            # Read to EOF even past the budget: the run ends when its pipes close as well as its process.
            while chunk := await stream.read(_READ_CHUNK):
                keep = min(len(chunk), budget[0])
                buf += chunk[:keep]
                budget[0] -= keep
                if keep < len(chunk) and not over.is_set():
                    over.set()
                    _kill_group(proc.pid)

        async def guard() -> None:
            """Kill the whole sandbox at its first OOM kill (cgroup) or past the limit (watchdog)."""
            while not over_memory():
                await asyncio.sleep(_MEMORY_POLL_S)
            memory_over.set()
            _kill_group(proc.pid)

        tasks = [
            asyncio.ensure_future(pump(proc.stdout, out)),
            asyncio.ensure_future(pump(proc.stderr, err)),
            asyncio.ensure_future(proc.wait()),
        ]
        watchdog = asyncio.ensure_future(guard())
        try:
            _, pending = await asyncio.wait(tasks, timeout=limits.wall_time_s)
            timed_out = bool(pending)
        finally:  # also on cancellation: nothing of the run may outlive it
            watchdog.cancel()
            _kill_group(proc.pid)
            # The group is dead, so the pipes reach EOF; let the readers drain them.
            _, pending = await asyncio.wait(tasks, timeout=_DRAIN_S)
            for t in pending:
                t.cancel()
            proc.close()
        if cgroup is not None and over_memory():  # an OOM kill the guard had no time to see
            memory_over.set()
        meter.record_sandbox(time.monotonic() - start, self._cpu_seconds(cgroup, proc.cpu_s))
        return classify(
            proc.returncode,
            timed_out,
            over.is_set(),
            memory_over.is_set(),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            time.monotonic() - start,
            limits,
            self.memory_bound,
        )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
