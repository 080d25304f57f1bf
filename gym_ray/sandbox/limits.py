"""What a sandboxed run may use, and what became of it: the limits, the result, and which limit a run hit.

A limit shows in one of three ways: bwrap reports a child killed by signal N as exit 128+N (SIGXCPU,
SIGXFSZ), the run's own stderr names it (Python's MemoryError, a failed fork, EFBIG), or the runner saw it
itself (the output budget, the memory bound, the wall clock).
"""

from __future__ import annotations

import signal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_PROCESS_MARKERS = ("Resource temporarily unavailable", "can't start new thread", "fork: retry")
_FILE_SIZE_MARKERS = ("File too large",)  # Python ignores SIGXFSZ, so writes fail with EFBIG instead

Limit = Literal["wall_time", "cpu_time", "memory", "processes", "output", "file_size"]
MemoryBound = Literal["cgroup-v2", "cgroup-v1", "watchdog"]


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


def classify(
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
