"""An event loop in a daemon thread of its own, for code that must outlive, or sit outside, its caller's loop.

Synchronous callers (a trainer's training loop) run coroutines on it with `run`; async callers on other
loops await them with `call`, so clients that are bound to the loop that opened them (MCP sessions, a
collector's streams) keep one home however many loops use them; an environment's hooks run on one so a
blocking hook cannot freeze the agent's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """A running event loop on a daemon thread named `name`; `on_exit(loop)` runs on that thread once the
    loop has stopped and closed."""

    def __init__(self, name: str, on_exit: Callable[[asyncio.AbstractEventLoop], None] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready, on_exit), name=name, daemon=True)
        self._thread.start()
        ready.wait()

    def _main(self, ready: threading.Event, on_exit: Callable[[asyncio.AbstractEventLoop], None] | None) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
            if on_exit is not None:
                on_exit(self.loop)

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; its result arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (from synchronous code, never from the loop itself)."""
        return self.submit(coro).result(timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` from another loop while it runs on this one."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (what still runs on it is dropped) and wait up to `timeout` s for its thread."""
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already stopped and closed
            pass
        self._thread.join(timeout)
