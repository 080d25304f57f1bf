"""The command line of one sandboxed run: `sh` (joins the run's cgroup), `setpriv` (a fresh uid, as root),
`prlimit` (the rlimits), then bubblewrap with the run's mounts and environment.

Nothing of the host process leaks in through bwrap itself: bwrap is PID 1 inside, and its
`/proc/1/environ` and `/proc/1/cmdline` are readable there, so it starts with an empty environment and
reads its options (mounts, `--setenv` values) from a memfd (`--args`), and the run's files are copied
from memfds into a tmpfs instead of bind-mounting a host temp dir (whose path `/proc/self/mountinfo`
would show).

Rlimits are applied with `prlimit` and the uid switch with `setpriv` (util-linux), and the cgroup is
entered by a `sh` in front of them, not with Popen's `preexec_fn`/`user=`: those are unsafe in threaded
servers or unsupported by uvloop, Ray Serve's event loop. Run as root, each run gets a fresh
unprivileged uid, so the process limit counts exactly that run's processes; run as a normal user, the
limit is added on top of the user's current process count (RLIMIT_NPROC is per uid).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gym_ray.sandbox.limits import SandboxLimits

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
HOST_ENV: dict[str, str] = {}  # for sh/setpriv/prlimit/bwrap: bwrap's is /proc/1/environ inside
_UID_BASE = 1_600_000_000  # far above any real account; one fresh uid per run when we are root
_BWRAP_PROCESSES = 2  # bwrap's own processes (outer + PID 1) count against the process limit
_ENTER_CGROUP = 'echo $$ > "$0" && exec "$@"'  # sh: join the run's cgroup, then become the sandbox
_BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",  # a crash of the interpreter leaves a traceback on stderr
}


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or prlimit) is missing or cannot create namespaces here; we never run unsandboxed."""


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


def work_files(files: dict[str, str | bytes]) -> dict[str, bytes]:
    """Paths under /work for the run's files; names that would leave it are refused."""
    out = {}
    for name, content in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"file {name!r} would be written outside the work dir")
        out[str(PurePosixPath("/work", rel))] = content.encode() if isinstance(content, str) else content
    return out


@dataclass(frozen=True)
class Launcher:
    """The host programs a run goes through, found once: bwrap, prlimit, sh, and setpriv when root."""

    bwrap: str
    prlimit: str
    sh: str
    setpriv: str | None

    @classmethod
    def find(cls, bwrap: str = "bwrap") -> Launcher:
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxUnavailable(
                f"bubblewrap ({bwrap!r}) not found on PATH: install it (e.g. `apt-get install bubblewrap`); "
                "untrusted code is never run without it"
            )
        helpers = ("prlimit", "setpriv", "sh") if os.geteuid() == 0 else ("prlimit", "sh")
        paths = {name: shutil.which(name) for name in helpers}
        missing = [name for name, path in paths.items() if path is None]
        if missing:
            raise SandboxUnavailable(f"{', '.join(missing)} not found on PATH; the sandbox needs it for its limits")
        return cls(found, paths["prlimit"], paths["sh"], paths.get("setpriv"))

    @property
    def as_root(self) -> bool:
        return self.setpriv is not None

    def pick_uid(self) -> int:
        return _UID_BASE + random.randrange(1_000_000) if self.as_root else os.getuid()

    def argv(
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
        if not self.as_root:
            nproc += _user_process_count(uid)
        mem = limits.memory_mb << 20
        join = [self.sh, "-c", _ENTER_CGROUP, str(cgroup / "cgroup.procs")] if cgroup else []
        user = [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if self.as_root else []
        rl = [
            self.prlimit,
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
            for k, v in {**_BASE_ENV, **env}.items():
                bw += ["--setenv", k, v]
            fds.append(_memfd(b"".join(a.encode() + b"\0" for a in bw)))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return [*join, *user, *rl, self.bwrap, "--args", str(fds[-1]), "--", *command], fds
