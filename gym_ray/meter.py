"""CPU accounting that costs two clock reads per step: the thread CPU a coroutine spends between its
awaits, and the sandbox runs made under a meter.

A coroutine's own CPU cannot be told apart from its neighbours' by reading the process's clock around an
`await` (every other episode of the loop runs meanwhile); reading the thread's clock around each of its
steps counts only what it ran itself. Work it hands to another thread or process is not in it: that is
measured where it runs (`thread_cpu`, `sandbox_usage`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

# The dict a sandbox run adds its wall and child CPU seconds to (the environment binds its session's
# cost record while a hook runs; none bound: nobody is counting).
sandbox_usage: ContextVar[dict[str, float] | None] = ContextVar("gym_ray_sandbox_usage", default=None)


def add(cost: dict[str, float], key: str, seconds: float) -> None:
    cost[key] = cost.get(key, 0.0) + seconds


def record_sandbox(wall_s: float, cpu_s: float) -> None:
    """Count one sandbox run into the bound cost record, if any."""
    cost = sandbox_usage.get()
    if cost is not None:
        add(cost, "sandbox_s", wall_s)
        add(cost, "sandbox_cpu_s", cpu_s)
        add(cost, "sandbox_runs", 1)


class Metered:
    """Await `coro`, adding the thread CPU of each of its steps to `cost[key]`; `switch` (called from inside
    the coroutine as it moves from one stage to the next) splits a step between the stages it spans."""

    __slots__ = ("_coro", "_mark", "cost", "key")

    def __init__(self, coro: Coroutine[Any, Any, T], cost: dict[str, Any], key: Any):
        self._coro, self.cost, self.key = coro, cost, key
        self._mark: float | None = None  # the clock at the start of the step under way (None between steps)

    def switch(self, key: Any) -> None:
        if self._mark is not None and key != self.key:
            now = time.thread_time()
            self.cost[self.key] = self.cost.get(self.key, 0.0) + now - self._mark
            self._mark = now
        self.key = key

    def _charge(self) -> None:
        self.cost[self.key] = self.cost.get(self.key, 0.0) + time.thread_time() - self._mark
        self._mark = None

    def __await__(self):
        it = self._coro.__await__()
        outer = _active.get()
        send: Any = None
        error: BaseException | None = None
        while True:
            _active.set(self)  # the task's context: seen by `switch` in the coroutine's own steps
            self._mark = time.thread_time()
            try:
                out = it.throw(error) if error is not None else it.send(send)
            except StopIteration as stop:
                return stop.value
            finally:
                self._charge()
                _active.set(outer)
            send, error = None, None
            try:
                send = yield out
            except BaseException as e:  # cancellation and the like go into the coroutine
                error = e


_active: ContextVar[Metered | None] = ContextVar("gym_ray_meter", default=None)


def switch(key: Any) -> None:
    """Charge what the running coroutine spends from now on to `key` (no meter running: nothing)."""
    m = _active.get()
    if m is not None:
        m.switch(key)


def thread_cpu(fn: Callable[[], T], cost: dict[str, float], key: str) -> Callable[[], T]:
    """`fn`, adding the CPU of the thread that runs it to `cost[key]`."""

    def run() -> T:
        t = time.thread_time()
        try:
            return fn()
        finally:
            add(cost, key, time.thread_time() - t)

    return run
