"""One Serve handle call for many: the concurrent calls of one process to one deployment, coalesced.

py-spy on an agent actor with policy and env on Serve (c=64) put ~40% of its CPU in Serve's per-request
machinery (router assignment, handle and router metrics, the gRPC call) and a few % in the env's own
code; the replica's side looked the same. The cost is per request, not per byte, so the calls a process
makes in one event-loop iteration to the same deployment go as one `call_batch` request, which the replica
runs concurrently, answering each call's result or exception. A batch holds at most one call per episode
at a time (an episode awaits each call), so nothing of one episode is reordered; a batch that fails as a
whole (its replica died, back pressure) fails each of its calls with that error, which is what each call
would have met alone. With session affinity, calls are grouped by a shard of their session id, and the
batch is routed by the shard's key, so every call of a session still lands on one replica.
"""

from __future__ import annotations

import asyncio
import pickle
import weakref
import zlib
from typing import Any

NUM_SHARDS = 64  # session shards of a sticky deployment: enough to spread over tens of replicas
MAX_BATCH = 64  # calls per request: more would keep replica-side queue metrics (autoscaling) blind


class BatchedCalls:
    """Mixin for a Serve deployment class: `call_batch` runs several of its own methods in one request."""

    async def call_batch(self, calls: list[tuple[str, tuple]]) -> list[tuple[bool, Any]]:
        async def one(name: str, args: tuple) -> Any:
            return await getattr(self, name)(*args)

        outs = await asyncio.gather(*(one(n, a) for n, a in calls), return_exceptions=True)
        return [(False, _picklable(o)) if isinstance(o, BaseException) else (True, o) for o in outs]


def _picklable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling (its type decides retry vs. error row), else its text:
    one unpicklable exception must not fail the other calls of the batch."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send the text
        return RuntimeError(f"{type(e).__name__}: {e}")


def shard_key(session_id: str) -> str:
    """The routing key of a session's shard (stable across processes: crc32, not Python's hash)."""
    return f"gym-ray-shard-{zlib.crc32(session_id.encode()) % NUM_SHARDS}"


class Coalescer:
    """Gathers the calls made in one event-loop iteration into one `call_batch` request per routing key.

    `handle` is a Serve `DeploymentHandle` of a `BatchedCalls` deployment. `sticky`: route by the session's
    shard (consistent-hash router), else let Serve pick any replica. Not picklable: build it in the process
    that uses it.
    """

    def __init__(self, handle: Any, *, sticky: bool = False, max_batch: int = MAX_BATCH) -> None:
        self._handle = handle
        self._sticky = sticky
        self._max_batch = max_batch
        self._routed: dict[str, Any] = {}
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, list]] = (
            weakref.WeakKeyDictionary()
        )
        self._in_flight: set[asyncio.Task] = set()

    def call(self, method: str, *args: Any, session_id: str | None = None) -> asyncio.Future:
        """Queue `method(*args)` on the deployment; the future resolves to its result or raises its error."""
        loop = asyncio.get_running_loop()
        key = shard_key(session_id) if self._sticky and session_id else None
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = {}
        batch = pending.get(key)
        if batch is None:
            batch = pending[key] = []
            loop.call_soon(self._flush, loop, key)
        fut = loop.create_future()
        batch.append((method, args, fut))
        if len(batch) >= self._max_batch:
            self._flush(loop, key)
        return fut

    def _route(self, key: str | None) -> Any:
        if key is None:
            return self._handle
        h = self._routed.get(key)
        if h is None:
            h = self._routed[key] = self._handle.options(session_id=key)
        return h

    def _flush(self, loop: asyncio.AbstractEventLoop, key: str | None) -> None:
        batch = self._pending[loop].pop(key, None)
        if not batch:
            return
        try:
            response = self._route(key).call_batch.remote([(m, a) for m, a, _ in batch])
        except Exception as e:  # noqa: BLE001 - e.g. the app is gone: every caller sees it
            _fail(batch, e)
            return
        task = loop.create_task(_deliver(response, batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)


async def _deliver(response: Any, batch: list) -> None:
    try:
        outs = await response
    except asyncio.CancelledError:
        for *_, fut in batch:
            fut.cancel()
        raise
    except Exception as e:  # noqa: BLE001 - the request failed as a whole: so did each call in it
        _fail(batch, e)
        return
    for (_, _, fut), (ok, value) in zip(batch, outs, strict=True):
        if fut.done():  # its caller gave up (episode timeout)
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _fail(batch: list, error: BaseException) -> None:
    for *_, fut in batch:
        if not fut.done():
            fut.set_exception(error)
