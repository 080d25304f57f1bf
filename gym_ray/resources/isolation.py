"""Keep a misbehaving environment from stalling anything but its own episodes.

Two ways environment code stalls a process, and what holds against each:
- a sync hook that never returns holds its thread forever (threads cannot be killed). `HookThreads`
  gives each environment its own pool that grows to `max_threads`, so hung calls never starve other
  environments or Python's shared default executor. A full pool is not a hung one (a loaded replica
  runs `max_threads` quick calls at once): new calls queue while threads finish calls, and fail at once
  (`EnvHungError`) only when every thread has been in its call for `hung_after_s`;
- an async hook that blocks (calls blocking code) freezes the event loop it runs on. An in-process
  environment therefore runs on its own loop thread (`EnvLoop`), never on the agent's loop: the
  agent's timeouts keep firing whatever the environment does. A call that has not *started* after
  `stall_s` means that loop is wedged; it is withdrawn and the environment moves to a fresh loop, so
  only the calls already running on the wedged loop are lost (their episodes time out).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gym_ray.background import BackgroundLoop

T = TypeVar("T")


class EnvHungError(RuntimeError):
    """Every worker of the environment is stuck in a call that never returned."""


class HookThreads:
    """A per-environment thread pool for sync hooks, failing fast when all of its threads hang."""

    def __init__(self, name: str, max_threads: int = 128, hung_after_s: float = 10.0) -> None:
        self.name = name
        self.max_threads = max_threads
        self.hung_after_s = hung_after_s
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix=f"gym-ray-env-{name}")
        self._started: dict[int, float] = {}  # running call -> when its thread took it
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn()` in a worker thread, with the caller's context variables (the bound session)."""
        with self._lock:
            if len(self._started) >= self.max_threads:
                newest = max(self._started.values())
                if time.monotonic() - newest >= self.hung_after_s:
                    raise EnvHungError(
                        f"{self.name}: all {self.max_threads} hook threads have been running earlier calls "
                        f"for over {self.hung_after_s:g} s (hung sync tool/verify?); refusing new calls"
                    )
        call = functools.partial(contextvars.copy_context().run, fn)
        future = self._executor.submit(self._timed, call)
        return await asyncio.wrap_future(future)

    def _timed(self, call: Callable[[], T]) -> T:
        key = threading.get_ident()
        with self._lock:
            self._started[key] = time.monotonic()
        try:
            return call()
        finally:
            with self._lock:
                del self._started[key]


class _Call:
    """One call handed to an environment loop. Exactly one of "started on the loop" and "withdrawn by the
    caller" wins; the result goes straight to the caller's loop in the step the coroutine ends (not by a
    done callback, which would wait in the environment loop's queue behind whatever blocks it)."""

    __slots__ = ("_lock", "caller", "future", "make", "state", "successor", "task")

    def __init__(self, make: Callable[[], Awaitable[Any]], caller: asyncio.AbstractEventLoop) -> None:
        self._lock = threading.Lock()
        self.make = make
        self.caller = caller
        self.future: asyncio.Future = caller.create_future()
        self.state = "queued"
        self.task: asyncio.Task | None = None
        self.successor: _Call | None = None  # the same call handed to a fresh loop

    def take(self, new: str) -> bool:
        with self._lock:
            if self.state != "queued":
                return False
            self.state = new
            return True

    def start(self) -> None:
        """On the environment's loop; the call counts as started only once its task first runs."""
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        if not self.take("started"):
            return  # withdrawn: handed to another loop
        try:
            value = await self.make()
        except BaseException as e:  # handed to the caller as is (CancelledError included)
            self.caller.call_soon_threadsafe(_settle, self.future, None, e)
        else:
            self.caller.call_soon_threadsafe(_settle, self.future, value, None)


def _settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class EnvLoop:
    """A private event loop thread for one in-process environment; replaced when it wedges.

    A call that has not started `stall_s` after it was handed over means the loop is blocked: a watchdog
    on the caller's side withdraws such calls and hands them to a fresh loop. The old loop keeps running
    what had started on it and stops once that is done, so at most `max_wedged` loops are blocked at once;
    beyond that the environment is declared hung."""

    def __init__(self, name: str, stall_s: float = 0.5, max_wedged: int = 8) -> None:
        self.name = name
        self.stall_s = stall_s
        self.max_wedged = max_wedged
        self.loops_started = 0
        self._retired: set[asyncio.AbstractEventLoop] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued: dict[_Call, tuple[asyncio.AbstractEventLoop, float]] = {}
        self._watchdog: asyncio.TimerHandle | None = None

    def _current(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                if len(self._retired) >= self.max_wedged:
                    raise EnvHungError(
                        f"{self.name}: {len(self._retired)} of its event loops are blocked by calls that never "
                        "yield (async code calling blocking code); refusing new calls"
                    )
                self._loop = self._start()
            return self._loop

    def _start(self) -> asyncio.AbstractEventLoop:
        def exited(loop: asyncio.AbstractEventLoop) -> None:
            with self._lock:
                self._retired.discard(loop)

        self.loops_started += 1
        return BackgroundLoop(f"gym-ray-envloop-{self.name}-{self.loops_started}", on_exit=exited).loop

    def _retire(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._loop is not loop:
                return
            self._loop = None
            self._retired.add(loop)

        async def drain() -> None:  # runs once the blocking call lets go of the loop
            me = asyncio.current_task()
            while any(t is not me for t in asyncio.all_tasks()):
                await asyncio.sleep(0.5)
            asyncio.get_running_loop().stop()

        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(drain()))

    def _submit(self, call: _Call) -> None:
        loop = self._current()
        self._queued[call] = (loop, time.monotonic())
        loop.call_soon_threadsafe(call.start)
        if self._watchdog is None:
            self._watchdog = call.caller.call_later(self.stall_s, self._check)

    def _check(self) -> None:
        """On the caller's loop: resubmit calls a wedged loop never started."""
        self._watchdog = None
        now = time.monotonic()
        for call, (loop, at) in list(self._queued.items()):
            if call.state != "queued":
                del self._queued[call]
            elif now - at >= self.stall_s and call.take("withdrawn"):
                del self._queued[call]
                self._retire(loop)
                fresh = call.successor = _Call(call.make, call.caller)
                fresh.future = call.future
                try:
                    self._submit(fresh)
                except EnvHungError as e:
                    _settle(call.future, None, e)
        if self._queued and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.stall_s / 2, self._check)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine `make()` on the environment's loop and await it from the caller's loop.

        Cancelling the caller (an episode timeout) cancels the call on the environment's loop."""
        call = _Call(make, asyncio.get_running_loop())
        self._submit(call)
        try:
            return await call.future
        except asyncio.CancelledError:
            self._cancel(call)
            raise

    def _cancel(self, call: _Call) -> None:
        while call.successor is not None:
            call = call.successor
        if call.take("withdrawn"):
            self._queued.pop(call, None)
        elif call.task is not None:
            call.task.get_loop().call_soon_threadsafe(call.task.cancel)
