"""The background event loop helper: sync and async callers run coroutines on its one loop thread."""

from __future__ import annotations

import asyncio
import threading

from gym_ray.background import BackgroundLoop


async def _where() -> tuple[asyncio.AbstractEventLoop, str]:
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), threading.current_thread().name


def test_sync_and_async_callers_share_its_loop_until_stop():
    exited = threading.Event()
    seen: list[asyncio.AbstractEventLoop] = []
    bg = BackgroundLoop("gym_ray-test-bg", on_exit=lambda loop: (seen.append(loop), exited.set()))
    assert bg.run(_where()) == (bg.loop, "gym_ray-test-bg")
    assert bg.submit(_where()).result(5)[0] is bg.loop

    async def from_another_loop():
        return await bg.call(_where()), asyncio.get_running_loop()

    (loop, _), caller = asyncio.run(from_another_loop())
    assert loop is bg.loop and caller is not bg.loop
    bg.stop()
    assert exited.is_set() and seen == [bg.loop] and bg.closed
    bg.stop()  # stopping twice is harmless
