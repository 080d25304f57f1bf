"""Run untrusted code (model-written programs, unit tests) under bubblewrap.

Every run gets fresh namespaces (no network: only a private loopback), a read-only view of the system
directories and nothing else of the host (no home, no project, no host /tmp), a private work dir, and
rlimits on CPU time, address space, processes, file size and open files, plus a wall-clock timeout
that kills the whole process group. When the program's main process ends, bwrap's PID 1 ends and the
kernel kills whatever it forked, so nothing outlives a run.

Rlimits are applied with `prlimit` and the uid switch with `setpriv` (util-linux), not with Popen's
`preexec_fn`/`user=`: those are unsafe in threaded servers or unsupported by uvloop, Ray Serve's
event loop. Run as root, each run gets a fresh unprivileged uid, so the process limit counts exactly
that run's processes; run as a normal user, the limit is added on top of the user's current process
count (RLIMIT_NPROC is per uid).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

# Host paths the sandbox sees, read-only. Everything else of the host is absent.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
)
_UID_BASE = 1_600_000_000  # far above any real account; one fresh uid per run when we are root
_BWRAP_PROCESSES = 2  # bwrap's own processes (outer + PID 1) count against the process limit
_READ_CHUNK = 1 << 16
_DRAIN_S = 5.0  # after the kill, how long the pipes may take to close

_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_PROCESS_MARKERS = ("Resource temporarily unavailable", "can't start new thread", "fork: retry")
_FILE_SIZE_MARKERS = ("File too large",)  # Python ignores SIGXFSZ, so writes fail with EFBIG instead

Limit = Literal["wall_time", "cpu_time", "memory", "processes", "output", "file_size"]


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or prlimit) is missing or cannot create namespaces here; we never run unsandboxed."""


class SandboxLimits(BaseModel):
    """Per-run limits. Defaults suit unit tests of small functions on a shared machine."""

    wall_time_s: float = Field(10.0, gt=0)
    cpu_time_s: int = Field(5, gt=0)
    memory_mb: int = Field(512, gt=0, description="address-space limit (RLIMIT_AS) per process")
    max_processes: int = Field(32, gt=0)
    max_output_bytes: int = Field(1 << 20, gt=0, description="stdout+stderr; the run is killed beyond it")
    max_file_mb: int = Field(16, gt=0)
    max_open_files: int = Field(256, gt=0)
    tmp_mb: int = Field(64, gt=0, description="size of the private tmpfs on /tmp")


class SandboxStatus(StrEnum):
    OK = "ok"
    NONZERO_EXIT = "nonzero_exit"
    TIMEOUT = "timeout"
    LIMIT = "limit"


class SandboxResult(BaseModel):
    """What happened to one run; `limit` names the limit when `status` is `limit` or `timeout`."""

    status: SandboxStatus
    limit: Limit | None = None
    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    duration_s: float = 0.0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == SandboxStatus.OK


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _user_process_count(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


class Sandbox:
    """Bounded-concurrency async runner of commands inside bubblewrap.

    `python` is the interpreter `run_python` uses; it must live under the system directories (the
    default `python3` is the system one, which has no access to the project's virtualenv).
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        max_concurrency: int = 4,
        python: str = "/usr/bin/python3",
        bwrap: str = "bwrap",
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.max_concurrency = max_concurrency
        self.python = python
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxUnavailable(
                f"bubblewrap ({bwrap!r}) not found on PATH: install it (e.g. `apt-get install bubblewrap`); "
                "untrusted code is never run without it"
            )
        self._as_root = os.geteuid() == 0
        helpers = ("prlimit", "setpriv") if self._as_root else ("prlimit",)
        paths = {name: shutil.which(name) for name in helpers}
        missing = [name for name, path in paths.items() if path is None]
        if missing:
            raise SandboxUnavailable(
                f"{', '.join(missing)} (util-linux) not found on PATH; the sandbox needs it for its limits"
            )
        self._bwrap, self._prlimit, self._setpriv = found, paths["prlimit"], paths.get("setpriv")
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._check_works()

    def _check_works(self) -> None:
        """Fail at start-up (not on the first verify) when namespaces are not allowed here."""
        with tempfile.TemporaryDirectory(prefix="gym_ray_sandbox_check_") as work:
            uid = self._pick_uid()
            if self._as_root:
                os.chown(work, uid, uid)
            argv = self._argv(["/bin/true"], Path(work), self.limits, uid, {})
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise SandboxUnavailable(
                f"bubblewrap cannot create a sandbox here (exit {proc.returncode}): {proc.stderr.strip()}"
            )

    def _pick_uid(self) -> int:
        return _UID_BASE + random.randrange(1_000_000) if self._as_root else os.getuid()

    def _argv(
        self, command: list[str], work: Path, limits: SandboxLimits, uid: int, env: dict[str, str]
    ) -> list[str]:
        nproc = limits.max_processes + _BWRAP_PROCESSES
        if not self._as_root:
            nproc += _user_process_count(uid)
        mem = limits.memory_mb << 20
        user = (
            [self._setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
            if self._as_root
            else []
        )
        rl = [
            *user,
            self._prlimit,
            f"--as={mem}:{mem}",
            f"--cpu={limits.cpu_time_s}:{limits.cpu_time_s + 1}",
            f"--nproc={nproc}:{nproc}",
            f"--fsize={limits.max_file_mb << 20}:{limits.max_file_mb << 20}",
            f"--nofile={limits.max_open_files}:{limits.max_open_files}",
            "--core=0:0",
            "--",
        ]
        bw = [self._bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        for d in _SYSTEM_DIRS:
            if os.path.islink(d):
                bw += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                bw += ["--ro-bind", d, d]
        for f in _ETC_FILES:
            bw += ["--ro-bind-try", f, f]
        bw += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        bw += ["--bind", str(work), "/work", "--remount-ro", "/", "--chdir", "/work", "--clearenv"]
        base_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/work",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",  # a crash of the interpreter leaves a traceback on stderr
        }
        for k, v in {**base_env, **env}.items():
            bw += ["--setenv", k, v]
        return [*rl, *bw, "--", *command]

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
    ) -> SandboxResult:
        """Run `command` in /work (holding `files`, paths relative to it); never raises for the program's faults."""
        if not command:
            raise ValueError("command must not be empty")
        limits = limits or self.limits
        async with self._semaphore():
            work = Path(tempfile.mkdtemp(prefix="gym_ray_sandbox_"))
            try:
                uid = self._pick_uid()
                _write_files(work, files or {})
                if self._as_root:
                    for p in (work, *work.rglob("*")):
                        os.chown(p, uid, uid, follow_symlinks=False)
                argv = self._argv(command, work, limits, uid, env or {})
                return await self._execute(argv, stdin, limits)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    async def _execute(
        self, argv: list[str], stdin: str | bytes | None, limits: SandboxLimits
    ) -> SandboxResult:
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        out, err = bytearray(), bytearray()
        budget = [limits.max_output_bytes]
        over = asyncio.Event()

        async def pump(stream: asyncio.StreamReader, buf: bytearray) -> None:
            # Read to EOF even past the budget: asyncio's wait() only returns once every pipe is closed.
            while chunk := await stream.read(_READ_CHUNK):
                keep = min(len(chunk), budget[0])
                buf += chunk[:keep]
                budget[0] -= keep
                if keep < len(chunk) and not over.is_set():
                    over.set()
                    _kill_group(proc.pid)

        async def feed() -> None:
            if stdin is None or proc.stdin is None:
                return
            try:
                proc.stdin.write(stdin.encode() if isinstance(stdin, str) else stdin)
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass

        tasks = [
            asyncio.ensure_future(pump(proc.stdout, out)),
            asyncio.ensure_future(pump(proc.stderr, err)),
            asyncio.ensure_future(feed()),
            asyncio.ensure_future(proc.wait()),
        ]
        try:
            _, pending = await asyncio.wait(tasks, timeout=limits.wall_time_s)
            timed_out = bool(pending)
        finally:  # also on cancellation: nothing of the run may outlive it
            _kill_group(proc.pid)
            # The group is dead, so the pipes reach EOF; let the readers drain them (wait() needs that).
            _, pending = await asyncio.wait(tasks, timeout=_DRAIN_S)
            for t in pending:
                t.cancel()
        return _classify(
            proc.returncode,
            timed_out,
            over.is_set(),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            time.monotonic() - start,
            limits,
        )


def _write_files(work: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = (work / name).resolve()
        if not path.is_relative_to(work):
            raise ValueError(f"file {name!r} would be written outside the work dir")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(
    rc: int | None,
    timed_out: bool,
    output_over: bool,
    stdout: str,
    stderr: str,
    duration: float,
    limits: SandboxLimits,
) -> SandboxResult:
    """Name what happened. bwrap reports a child killed by signal N as exit 128+N; -N is bwrap itself killed."""
    sig = rc - 128 if rc is not None and rc > 128 else (-rc if rc is not None and rc < 0 else None)
    tail = stderr[-4000:]
    status, limit, detail = SandboxStatus.LIMIT, None, ""
    if output_over:
        limit, detail = "output", f"output exceeded {limits.max_output_bytes} bytes; killed"
    elif sig == signal.SIGXCPU:
        limit, detail = "cpu_time", f"CPU time limit of {limits.cpu_time_s}s exceeded"
    elif sig == signal.SIGXFSZ or (rc and any(m in tail for m in _FILE_SIZE_MARKERS)):
        limit, detail = "file_size", f"file size limit of {limits.max_file_mb} MB exceeded"
    elif timed_out:
        status, limit = SandboxStatus.TIMEOUT, "wall_time"
        detail = f"wall-clock limit of {limits.wall_time_s}s exceeded; process group killed"
    elif rc == 0:
        status = SandboxStatus.OK
    elif any(m in tail for m in _MEMORY_MARKERS):
        limit, detail = "memory", f"memory limit of {limits.memory_mb} MB exceeded"
    elif any(m in tail for m in _PROCESS_MARKERS):
        limit, detail = "processes", f"process limit of {limits.max_processes} exceeded"
    else:
        status = SandboxStatus.NONZERO_EXIT
        detail = f"killed by {_signal_name(sig)}" if sig else f"exited with code {rc}"
    return SandboxResult(
        status=status,
        limit=limit,
        exit_code=None if timed_out else rc,
        signal=_signal_name(sig) if sig else None,
        stdout=stdout,
        stderr=stderr,
        truncated=output_over,
        duration_s=round(duration, 3),
        detail=detail,
    )
