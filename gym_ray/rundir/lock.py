"""One run per output directory: an exclusive flock on `<output_dir>/.gym_ray/lock` for the run's lifetime.

Two runs writing one directory would each write every group (duplicates no resume can untangle), so the
second one fails at once, naming the holder (pid, host, start time and command, which the holder writes
into the file). The kernel drops an flock when its process dies, however it dies, so a crashed run leaves
no stale lock and `--resume` can start at once. The hidden folder keeps dataset readers off the file
(location.py). An old directory's top-level `_lock` is taken too, then removed, and its manifest and metrics
move into `.gym_ray/`: a run of an older gym_ray still writing there is refused the same way.

An object store (`s3://...`) has no flock: there the run only checks that the prefix takes writes and
records itself in `.gym_ray/lock`; keeping two runs off one prefix is the user's (one job per output_dir).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from gym_ray.rundir.location import LEGACY_LOCK, LOCK, META_DIR, RunDir

LOCK_FILE = f"{META_DIR}/{LOCK}"
_PROBE_BYTES = 1 << 16

# resolved directory -> [fd, depth]: a process takes each directory's flock once (a second open file
# description would conflict with its own lock) and nested holds share it (the CLI around collect_to_dir)
_held: dict[Path, list[int]] = {}


class RunDirError(ValueError):
    """The output directory cannot take this run: another run holds it, or it cannot be written."""


@contextlib.contextmanager
def hold(output_dir: str | Path | RunDir) -> Iterator[RunDir]:
    """Create `output_dir` if needed, check that it takes writes, and lock it for the `with` block."""
    run = RunDir.of(output_dir)
    if run.remote:
        yield _claim_remote(run)
        return
    d = run.path
    key = d.resolve()
    entry = _held.get(key)
    if entry is None:
        entry = _held[key] = [_acquire(d), 0]
    entry[1] += 1
    try:
        yield run
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])  # drops the flock


def _acquire(d: Path) -> int:
    try:
        (d / META_DIR).mkdir(parents=True, exist_ok=True)
        fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _unwritable(d, e) from None
    _flock(d, fd, d / LOCK_FILE)
    legacy = d / LEGACY_LOCK
    if legacy.is_file():
        try:
            old = os.open(legacy, os.O_RDWR)
        except OSError as e:
            os.close(fd)
            raise _unwritable(d, e) from None
        try:
            _flock(d, old, legacy)
        except RunDirError:
            os.close(fd)
            raise
        legacy.unlink(missing_ok=True)
        os.close(old)
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        _probe(d)
        RunDir.local(d).migrate_legacy()
    except OSError as e:
        os.close(fd)
        raise _unwritable(d, e) from None
    return fd


def _flock(d: Path, fd: int, path: Path) -> None:
    """Take the flock or close `fd` and raise, naming the holder."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
        os.close(fd)
        if holder is None:
            raise RunDirError(f"{path}: cannot lock the output directory: {e.strerror or e}") from None
        raise RunDirError(f"{d}: another run is writing into this output directory ({holder}); wait for it "
                          "to end, or choose another collect.output_dir") from None


def _holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 65536, 0))
        return f"pid {h['pid']} on {h['host']}, started {h['started_at']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its details yet"


def _probe(d: Path) -> None:
    """Write, sync and remove a small file: a read-only or full directory fails here, before any deploy,
    not when the first rollouts are due."""
    probe = d / f".probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, bytes(_PROBE_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _claim_remote(run: RunDir) -> RunDir:
    """Write this run's details to `<uri>/.gym_ray/lock`: a prefix that takes no writes (no bucket, no
    credentials) fails here, before any deploy."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": " ".join(sys.argv)}
    try:
        run.write_bytes(run.meta(LOCK), (json.dumps(me) + "\n").encode())
    except (OSError, ValueError) as e:
        raise RunDirError(f"collect.output_dir {run}: cannot write there: {' '.join(str(e).split())}; check the "
                          "bucket, the credentials (AWS_* variables) and AWS_ENDPOINT_URL") from None
    return run


def _unwritable(d: Path, e: OSError) -> RunDirError:
    return RunDirError(f"collect.output_dir {d}: cannot write there: {e.strerror or e}; free space or fix its "
                       "permissions, or choose another collect.output_dir")
