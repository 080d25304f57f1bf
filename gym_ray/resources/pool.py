"""Run CPU-heavy verification in worker processes, with a hard per-call timeout.

A thread cannot help CPU-bound Python (the GIL) and cannot be killed. A call that overruns its
timeout here kills the pool's workers (e.g. a sympy simplification that never ends), the pool is
rebuilt, and the other calls that were in flight on it are retried once on the new pool.
Functions must be importable by name (module level), because workers are spawned, not forked:
forking a process with Ray's threads in it can deadlock.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")


class ProcessTimeout(TimeoutError):
    """The function ran past its timeout; its worker was killed."""


class ProcessPool:
    def __init__(self, max_workers: int | None = None, start_method: str = "spawn") -> None:
        self.max_workers = max_workers or min(4, os.cpu_count() or 1)
        self._ctx = multiprocessing.get_context(start_method)
        self._executor: ProcessPoolExecutor | None = None
        self._killed: set[int] = set()  # ids of executors we broke on purpose
        self._lock = threading.Lock()
        # At most `max_workers` calls are submitted at once, so a timeout measures running time, not
        # queueing, and killing the workers never hits a call that was merely waiting.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.max_workers, mp_context=self._ctx)
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor, kill: bool) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
            if kill:
                self._killed.add(id(executor))
                for proc in list(getattr(executor, "_processes", {}).values()):
                    proc.kill()
        executor.shutdown(wait=False)

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a worker process; raises `ProcessTimeout` past `timeout_s`."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.max_workers)
        async with slots:
            return await self._run(functools.partial(fn, *args, **kwargs), timeout_s)

    async def _run(self, call: functools.partial, timeout_s: float | None) -> Any:
        for attempt in range(2):
            executor = self._get()
            future = asyncio.wrap_future(executor.submit(call))
            try:
                return await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                self._discard(executor, kill=True)
                name = getattr(call.func, "__qualname__", repr(call.func))
                raise ProcessTimeout(f"{name} ran longer than {timeout_s} s; its worker was killed") from None
            except BrokenProcessPool:
                killed_by_timeout = id(executor) in self._killed
                self._discard(executor, kill=False)
                if not killed_by_timeout or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


_default: ProcessPool | None = None


async def run_in_process(
    fn: Callable[..., T], *args: Any, timeout_s: float | None = 10.0, **kwargs: Any
) -> T:
    """Run `fn` in this process's shared worker pool (created on first use) with a timeout."""
    global _default
    if _default is None:
        _default = ProcessPool()
    return await _default.run(fn, *args, timeout_s=timeout_s, **kwargs)
