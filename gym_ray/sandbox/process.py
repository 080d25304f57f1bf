"""Child processes that inherit nothing of ours, the same on every event loop.

asyncio's subprocess support depends on the loop: uvloop (the loop of Ray's actors and Serve's replicas)
ignores `close_fds`, so a child started through it inherits every descriptor of ours that is not
close-on-exec (Ray's log files, pipes, sockets). `spawn` starts the child with the standard library's
`subprocess.Popen`, which closes every descriptor but 0-2 and `pass_fds`, in a session of its own (so
`kill_group` reaches everything it started without leaving the group), reads its pipes on the running
loop and waits for its exit on a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable


class Child:
    """One started process: its pipes (stdout, stderr as StreamReaders), its exit and its group."""

    def __init__(self, popen: subprocess.Popen, stdin: asyncio.WriteTransport | None, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader, transports: list[asyncio.BaseTransport]):
        self.popen, self.pid = popen, popen.pid
        self.stdout, self.stderr = stdout, stderr
        self._stdin = stdin
        self._transports = transports
        self.cpu_s = 0.0  # user + system CPU of the process and the descendants it reaped, once it has ended

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def feed(self, data: bytes) -> None:
        """Write `data` to stdin, then close it; the loop writes as the child reads (one that never reads
        blocks nothing)."""
        self._stdin.write(data)
        self._stdin.close()

    async def wait(self) -> int:
        """The exit status once the process has ended (the group may live on: see `kill_group`); reaped with
        `wait4`, whose rusage gives `cpu_s`."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        pidfd = os.pidfd_open(self.pid)
        loop.add_reader(pidfd, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        try:
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:  # reaped elsewhere: the status is Popen's, the CPU unknown
            return self.popen.wait()
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        return self.popen.returncode

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Close our ends of its pipes: a process that escaped the group and still holds them gets EPIPE."""
        for t in self._transports:
            t.close()
        if self._stdin is not None:
            if self._stdin.get_write_buffer_size():
                self._stdin.abort()  # the part of stdin it never read
            elif not self._stdin.is_closing():
                self._stdin.close()


async def spawn(argv: list[str], *, env: dict[str, str], stdin: bool = True, pass_fds: tuple[int, ...] = (),
                cwd: str | None = None, on_start: Callable[[int], None] | None = None) -> Child:
    """Start `argv` with exactly `env`, pipes for stdout and stderr (and stdin when `stdin`), no other
    descriptor but `pass_fds`, in a new session. `on_start(pid)` runs before the loop runs anything else,
    so nothing the child sends can be served before it."""
    popen = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=cwd, close_fds=True, pass_fds=pass_fds,
                             start_new_session=True)
    if on_start is not None:
        on_start(popen.pid)
    loop = asyncio.get_running_loop()
    writer = (await loop.connect_write_pipe(asyncio.Protocol, popen.stdin))[0] if stdin else None
    readers, transports = [], []
    for pipe in (popen.stdout, popen.stderr):
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), pipe)
        readers.append(reader)
        transports.append(transport)
    return Child(popen, writer, readers[0], readers[1], transports)
