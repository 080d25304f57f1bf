"""`total_memory_mb` bounds the whole sandbox, not each process: forked children add up."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from gym_ray.sandbox import Sandbox, SandboxLimits, SandboxStatus

LIMITS = SandboxLimits(
    wall_time_s=30,
    cpu_time_s=20,
    memory_mb=600,
    total_memory_mb=1024,
    max_processes=16,
    max_output_bytes=1 << 16,
)
MB = 1 << 20


def children_code(n: int, mb: int) -> str:
    """`n` forked children, each touching `mb` MB (one process stays far below memory_mb)."""
    return (
        "import os, time\n"
        "kids = []\n"
        f"for _ in range({n}):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        f"        block = b'x' * ({mb} << 20)\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    os.waitpid(pid, 0)\n"
        "print('all children done')\n"
    )


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                kids = [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
                out += kids
                stack += kids
        except OSError:
            continue
    return out


def _sandboxes(pid: int) -> list[int]:
    """This process's bwrap processes and everything below them (not a Ray cluster the test session runs)."""
    out = []
    for p in _descendants(pid):
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "bwrap":
                out += [p, *_descendants(p)]
        except OSError:
            continue
    return sorted(set(out))


class PeakRss:
    """The largest summed RSS of this process's sandboxes, sampled every 10 ms."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            total = 0
            for pid in _sandboxes(os.getpid()):
                try:
                    total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
                except (OSError, ValueError, IndexError):
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module", params=[True, False], ids=["default", "watchdog"])
def sandbox(request) -> Sandbox:
    return Sandbox(LIMITS, max_concurrency=1, use_cgroups=request.param)


def test_forked_children_are_bounded_as_a_whole(sandbox):
    with PeakRss() as rss:
        res = asyncio.run(sandbox.run_python(children_code(8, 300)))
    assert res.status == SandboxStatus.LIMIT and res.limit == "memory", res
    assert "total memory limit of 1024 MB" in res.detail and sandbox.memory_bound in res.detail
    assert "all children done" not in res.stdout  # the whole sandbox was killed, not one child
    assert rss.peak < 1536 * MB, f"the sandboxes reached {rss.peak // MB} MB"


def test_children_within_the_bound_run_to_the_end(sandbox):
    res = asyncio.run(sandbox.run_python(children_code(3, 100)))
    assert res.ok and res.stdout == "all children done\n", res


def test_the_watchdog_can_be_forced():
    assert Sandbox(LIMITS, use_cgroups=False).memory_bound == "watchdog"


def _own_memory_cgroup_v1() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            own = Path("/sys/fs/cgroup/memory", path.lstrip("/"))
            return own if (own / "memory.limit_in_bytes").exists() and os.access(own, os.W_OK) else None
    return None


def test_a_writable_memory_cgroup_is_used_and_cleaned_up():
    own = _own_memory_cgroup_v1()
    if own is None:
        pytest.skip("no writable cgroup v1 memory hierarchy here (the watchdog is used)")
    sandbox = Sandbox(LIMITS)
    assert sandbox.memory_bound in ("cgroup-v2", "cgroup-v1")
    asyncio.run(sandbox.run_python(children_code(4, 300)))
    assert not list(own.glob("gym_ray_sandbox_*"))
