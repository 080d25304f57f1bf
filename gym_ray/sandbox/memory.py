"""How `total_memory_mb` is enforced for a whole sandbox: a memory cgroup per run, or a watchdog.

A per-run cgroup, created under our own where we may, counts every process of the run and its tmpfs
files, and the kernel OOM-kills inside it. Where none can be created, a watchdog sums the resident memory
of the sandbox's process tree every few milliseconds and kills the run past the limit.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path
from typing import Literal

_CGROUP_PREFIX = "gym_ray_sandbox_"


class MemoryCgroups:
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


def own_memory_cgroups() -> MemoryCgroups | None:
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
        cgroups = MemoryCgroups(kind, Path(mountpoint, rel.lstrip("/")))
        try:
            probe = cgroups.create(64 << 20)
        except OSError:
            continue  # not writable, or (v2) memory not enabled for our children
        cgroups.try_remove(probe)
        return cgroups
    return None


def tree_memory(root: int) -> int:
    """Anonymous + shared-memory resident bytes of `root` and its descendants (the watchdog's measure).

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
