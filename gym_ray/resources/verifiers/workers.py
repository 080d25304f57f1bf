"""The process pool that CPU-heavy scorers (math-verify, reasoning-gym) share.

A scorer's timeout must measure the scorer, not the machine: a freshly spawned worker first imports
sympy or reasoning-gym, which takes seconds (far more on a loaded machine), and a burst of verifies
queues for workers. So calls wait for a free worker before any clock starts, the worker imports what
the scorer needs *then* arms a SIGALRM timer for the scorer's own run, and the pool's hard kill
(for a hang no signal can interrupt) only fires after a generous start-up allowance on top.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from gym_ray.resources.pool import ProcessPool, ProcessTimeout

T = TypeVar("T")

STARTUP_ALLOWANCE_S = 120.0

_pool: ProcessPool | None = None
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


class _Overrun(BaseException):
    """Raised by the alarm; a BaseException so scorers' own `except Exception` cannot swallow it."""


def _on_alarm(*_: Any) -> None:
    raise _Overrun()


def timed_call(
    fn: Callable[..., T], args: tuple, timeout_s: float, preload: tuple[str, ...]
) -> tuple[bool, Any]:
    """In the worker: import `preload`, then run `fn(*args)` under a `timeout_s` alarm; (finished, value)."""
    for module in preload:
        importlib.import_module(module)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return True, fn(*args)
    except _Overrun:
        return False, None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def scorer_pool() -> ProcessPool:
    global _pool
    if _pool is None:
        workers = int(os.environ.get("GYM_RAY_SCORER_WORKERS", min(4, os.cpu_count() or 1)))
        _pool = ProcessPool(max_workers=workers)
    return _pool


async def run_scorer(fn: Callable[..., T], *args: Any, timeout_s: float, preload: tuple[str, ...] = ()) -> T:
    """`fn(*args)` in a scorer worker; raises `ProcessTimeout` when `fn` itself runs past `timeout_s`."""
    pool = scorer_pool()
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(pool.max_workers)
    async with slots:
        finished, value = await pool.run(
            timed_call, fn, args, timeout_s, preload, timeout_s=timeout_s + STARTUP_ALLOWANCE_S
        )
    if not finished:
        raise ProcessTimeout(f"{getattr(fn, '__qualname__', fn)} ran longer than {timeout_s} s")
    return value
