"""Run untrusted code (model-written programs, unit tests) under bubblewrap.

Every run gets fresh namespaces (no network: only a private loopback), a read-only view of the system
directories and nothing else of the host (no home, no project, no host /tmp), a private in-memory work
dir, and rlimits on CPU time, address space, processes, file size and open files, plus a wall-clock
timeout that kills the whole process group. When the program's main process ends, bwrap's PID 1 ends
and the kernel kills whatever it forked, so nothing outlives a run.

Nothing of the host process leaks in through bwrap itself: bwrap is PID 1 inside, and its
`/proc/1/environ` and `/proc/1/cmdline` are readable there, so it starts with an empty environment and
reads its options (mounts, `--setenv` values) from a memfd (`--args`), and the run's files are copied
from memfds into a tmpfs instead of bind-mounting a host temp dir (whose path `/proc/self/mountinfo`
would show).

Memory is bounded twice: RLIMIT_AS per process, and `total_memory_mb` for the whole sandbox: by a
per-run memory cgroup created under our own when one can be (every process and its tmpfs files count),
else by a watchdog that sums the resident memory of the sandbox's processes every 50 ms
(`Sandbox.memory_bound` says which).

Rlimits are applied with `prlimit` and the uid switch with `setpriv` (util-linux), and the cgroup is
entered by a `sh` in front of them, not with Popen's `preexec_fn`/`user=`: those are unsafe in threaded
servers or unsupported by uvloop, Ray Serve's event loop. Run as root, each run gets a fresh
unprivileged uid, so the process limit counts exactly that run's processes; run as a normal user, the
limit is added on top of the user's current process count (RLIMIT_NPROC is per uid).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field

from gym_ray.resources.process import spawn

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
_HOST_ENV: dict[str, str] = {}  # for sh/setpriv/prlimit/bwrap: bwrap's is /proc/1/environ inside
_UID_BASE = 1_600_000_000  # far above any real account; one fresh uid per run when we are root
_BWRAP_PROCESSES = 2  # bwrap's own processes (outer + PID 1) count against the process limit
_READ_CHUNK = 1 << 16
_DRAIN_S = 5.0  # after the kill, how long the pipes may take to close
_MEMORY_POLL_S = 0.05
_CGROUP_PREFIX = "gym_ray_sandbox_"
_ENTER_CGROUP = 'echo $$ > "$0" && exec "$@"'  # sh: join the run's cgroup, then become the sandbox

_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_PROCESS_MARKERS = ("Resource temporarily unavailable", "can't start new thread", "fork: retry")
_FILE_SIZE_MARKERS = ("File too large",)  # Python ignores SIGXFSZ, so writes fail with EFBIG instead

Limit = Literal["wall_time", "cpu_time", "memory", "processes", "output", "file_size"]
MemoryBound = Literal["cgroup-v2", "cgroup-v1", "watchdog"]


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or prlimit) is missing or cannot create namespaces here; we never run unsandboxed."""


class SandboxLimits(BaseModel):
    """Per-run limits. Defaults suit unit tests of small functions on a shared machine."""

    wall_time_s: float = Field(10.0, gt=0)
    cpu_time_s: int = Field(5, gt=0)
    memory_mb: int = Field(512, gt=0, description="address-space limit (RLIMIT_AS) per process")
    total_memory_mb: int = Field(
        1024, gt=0, description="resident memory of the whole sandbox: all its processes and tmpfs files"
    )
    max_processes: int = Field(32, gt=0)
    max_output_bytes: int = Field(1 << 20, gt=0, description="stdout+stderr; the run is killed beyond it")
    max_file_mb: int = Field(16, gt=0)
    max_open_files: int = Field(256, gt=0)
    tmp_mb: int = Field(64, gt=0, description="free space of each private tmpfs: /tmp and the work dir")


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


class _MemoryCgroups:
    """Per-run memory cgroups, created as children of our own cgroup in one hierarchy."""

    def __init__(self, kind: Literal["cgroup-v2", "cgroup-v1"], parent: Path) -> None:
        self.kind, self.parent = kind, parent

    def create(self, limit_bytes: int) -> Path:
        path = self.parent / f"{_CGROUP_PREFIX}{secrets.token_hex(8)}"
        path.mkdir()
        try:
            if self.kind == "cgroup-v2":
                (path / "memory.max").write_text(str(limit_bytes))
                for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (path / name).exists():
                        (path / name).write_text(value)
            else:
                (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                if (path / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        except OSError:
            path.rmdir()
            raise
        return path

    def oom_kills(self, path: Path) -> int:
        events = path / ("memory.events" if self.kind == "cgroup-v2" else "memory.oom_control")
        try:
            for line in events.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    @staticmethod
    def try_remove(path: Path) -> bool:
        """rmdir once the run's processes are gone; SIGKILL any that are left (all are the run's own)."""
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        return False


def _own_memory_cgroups() -> _MemoryCgroups | None:
    """Our own cgroup in a hierarchy with the memory controller where we may create limited children."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    found: dict[str, tuple[str, str, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _source, options, *_) = left.split(), right.split()
        if fstype == "cgroup2" and "" in own:
            found.setdefault("cgroup-v2", (fields[3], fields[4], own[""]))
        elif fstype == "cgroup" and "memory" in options.split(",") and "memory" in own:
            found.setdefault("cgroup-v1", (fields[3], fields[4], own["memory"]))
    for kind in ("cgroup-v2", "cgroup-v1"):
        if kind not in found:
            continue
        root, mountpoint, path = found[kind]
        if root != "/" and not (path == root or path.startswith(root + "/")):
            continue  # our cgroup is outside what this mount shows
        rel = path[len(root) :] if root != "/" else path
        cgroups = _MemoryCgroups(kind, Path(mountpoint, rel.lstrip("/")))
        try:
            probe = cgroups.create(64 << 20)
        except OSError:
            continue  # not writable, or (v2) memory not enabled for our children
        cgroups.try_remove(probe)
        return cgroups
    return None


def _tree_memory(root: int) -> int:
    """Anonymous + shared-memory resident bytes of `root` and its descendants.

    Orphans re-parent to bwrap's PID 1, a child of `root`, so the tree holds every process of the
    sandbox. File-backed pages (shared libraries, page cache) are not counted.
    """
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("RssAnon:", "RssShmem:")):
                        total += int(line.split()[1]) << 10
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack += map(int, f.read().split())
        except (OSError, ValueError):
            continue
    return total


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("gym_ray_sandbox")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def _work_files(files: dict[str, str | bytes]) -> dict[str, bytes]:
    """Paths under /work for the run's files; names that would leave it are refused."""
    out = {}
    for name, content in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"file {name!r} would be written outside the work dir")
        out[str(PurePosixPath("/work", rel))] = content.encode() if isinstance(content, str) else content
    return out


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
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxUnavailable(
                f"bubblewrap ({bwrap!r}) not found on PATH: install it (e.g. `apt-get install bubblewrap`); "
                "untrusted code is never run without it"
            )
        self._as_root = os.geteuid() == 0
        helpers = ("prlimit", "setpriv", "sh") if self._as_root else ("prlimit", "sh")
        paths = {name: shutil.which(name) for name in helpers}
        missing = [name for name, path in paths.items() if path is None]
        if missing:
            raise SandboxUnavailable(
                f"{', '.join(missing)} not found on PATH; the sandbox needs it for its limits"
            )
        self._bwrap, self._prlimit, self._setpriv = found, paths["prlimit"], paths.get("setpriv")
        self._sh = paths["sh"]
        self._cgroups = _own_memory_cgroups() if use_cgroups else None
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
        argv, fds = self._argv(["/bin/true"], {}, self.limits, self._pick_uid(), {}, cgroup)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, pass_fds=fds, env=_HOST_ENV, cwd="/"
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

    def _pick_uid(self) -> int:
        return _UID_BASE + random.randrange(1_000_000) if self._as_root else os.getuid()

    def _argv(
        self,
        command: list[str],
        files: dict[str, bytes],
        limits: SandboxLimits,
        uid: int,
        env: dict[str, str],
        cgroup: Path | None,
        ro_binds: dict[str, str] | None = None,
    ) -> tuple[list[str], list[int]]:
        """The command line and the memfds it reads (bwrap's options, the files); the caller closes them."""
        nproc = limits.max_processes + _BWRAP_PROCESSES
        if not self._as_root:
            nproc += _user_process_count(uid)
        mem = limits.memory_mb << 20
        join = [self._sh, "-c", _ENTER_CGROUP, str(cgroup / "cgroup.procs")] if cgroup else []
        user = (
            [self._setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
            if self._as_root
            else []
        )
        rl = [
            self._prlimit,
            f"--as={mem}:{mem}",
            f"--cpu={limits.cpu_time_s}:{limits.cpu_time_s + 1}",
            f"--nproc={nproc}:{nproc}",
            f"--fsize={limits.max_file_mb << 20}:{limits.max_file_mb << 20}",
            f"--nofile={limits.max_open_files}:{limits.max_open_files}",
            "--core=0:0",
            "--",
        ]
        bw = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        for d in _SYSTEM_DIRS:
            if os.path.islink(d):
                bw += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                bw += ["--ro-bind", d, d]
        for f in _ETC_FILES:
            bw += ["--ro-bind-try", f, f]
        work_size = (limits.tmp_mb << 20) + sum(len(c) for c in files.values())
        bw += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        bw += ["--size", str(work_size), "--tmpfs", "/work"]
        dirs = {str(p) for path in files for p in PurePosixPath(path).parents if len(p.parts) > 2}
        for d in sorted(dirs, key=lambda p: p.count("/")):
            bw += ["--dir", d]
        fds: list[int] = []
        try:
            for path, content in files.items():
                fds.append(_memfd(content))
                bw += ["--file", str(fds[-1]), path]
            for host, inside in (ro_binds or {}).items():
                bw += ["--ro-bind", host, inside]
            bw += ["--remount-ro", "/", "--chdir", "/work", "--clearenv"]
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
            fds.append(_memfd(b"".join(a.encode() + b"\0" for a in bw)))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return [*join, *user, *rl, self._bwrap, "--args", str(fds[-1]), "--", *command], fds

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
        work_files = _work_files(files or {})
        async with self._semaphore():
            cgroup = self._cgroups.create(limits.total_memory_mb << 20) if self._cgroups else None
            fds: list[int] = []
            try:
                argv, fds = self._argv(command, work_files, limits, self._pick_uid(), env or {}, cgroup, ro_binds)
                return await self._execute(argv, fds, stdin, limits, cgroup, on_start)
            finally:
                for fd in fds:
                    os.close(fd)
                deadline = time.monotonic() + _DRAIN_S
                while cgroup and not self._cgroups.try_remove(cgroup) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)

    def _over_memory(self, cgroup: Path | None, pid: int, limits: SandboxLimits) -> Callable[[], bool]:
        if cgroup is not None:
            return lambda: self._cgroups.oom_kills(cgroup) > 0
        return lambda: _tree_memory(pid) > limits.total_memory_mb << 20

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
            env=_HOST_ENV,
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
        return _classify(
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


def _classify(
    rc: int | None,
    timed_out: bool,
    output_over: bool,
    memory_over: bool,
    stdout: str,
    stderr: str,
    duration: float,
    limits: SandboxLimits,
    memory_bound: MemoryBound,
) -> SandboxResult:
    """Name what happened. bwrap reports a child killed by signal N as exit 128+N; -N is bwrap itself killed."""
    sig = rc - 128 if rc is not None and rc > 128 else (-rc if rc is not None and rc < 0 else None)
    tail = stderr[-4000:]
    status, limit, detail = SandboxStatus.LIMIT, None, ""
    if output_over:
        limit, detail = "output", f"output exceeded {limits.max_output_bytes} bytes; killed"
    elif memory_over:
        limit = "memory"
        detail = (
            f"total memory limit of {limits.total_memory_mb} MB for the whole sandbox exceeded "
            f"(total_memory_mb, {memory_bound}); killed"
        )
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
        limit, detail = "memory", f"memory limit of {limits.memory_mb} MB per process exceeded (memory_mb)"
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
