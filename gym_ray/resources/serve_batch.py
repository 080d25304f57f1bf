"""One Serve handle call for many: the concurrent calls of one process to one deployment, coalesced.

py-spy on an agent actor with policy and env on Serve (c=64) put ~40% of its CPU in Serve's per-request
machinery (router assignment, handle and router metrics, the gRPC call) and a few % in the env's own
code; the replica's side looked the same. The cost is per request, not per byte, so the calls a process
makes in one event-loop iteration to the same deployment go as one `call_batch` request, which the replica
runs concurrently, answering each call's result or exception. A batch holds at most one call per episode
at a time (an episode awaits each call), so nothing of one episode is reordered; a batch that fails as a
whole (its replica died, back pressure) fails each of its calls with that error, which is what each call
would have met alone. With session affinity (`routing.PinnedRouter`), each answer names the replica that
ran it; a session's later calls are grouped by that replica and routed to it, so every call of a session
lands on one replica and the calls of one iteration split by replica, not by session.
"""

from __future__ import annotations

import asyncio
import pickle
import weakref
from collections import OrderedDict
from typing import Any

STICKY_ROUTER = "gym_ray.resources.routing:PinnedRouter"  # the request router of sticky deployments
REPLICA_KEY_PREFIX = "gym-ray-replica-"  # + a replica's unique id: the routing key of its sessions
MAX_HOMES = 1 << 17  # sessions whose replica a Coalescer remembers; the oldest unused one goes first
MAX_BATCH = 64  # calls per request: more would keep replica-side queue metrics (autoscaling) blind


class BatchedCalls:
    """Mixin for a Serve deployment class: `call_batch` runs several of its own methods in one request."""

    async def call_batch(self, calls: list[tuple[str, tuple]]) -> tuple[str, list[tuple[bool, Any]]]:
        """This replica's routing key, and per call (True, result) or (False, exception)."""

        async def one(name: str, args: tuple) -> Any:
            return await getattr(self, name)(*args)

        outs = await asyncio.gather(*(one(n, a) for n, a in calls), return_exceptions=True)
        return replica_key(), [(False, _picklable(o)) if isinstance(o, BaseException) else (True, o) for o in outs]


def replica_key() -> str:
    """The routing key that `PinnedRouter` sends to the calling replica."""
    from ray import serve

    return REPLICA_KEY_PREFIX + serve.get_replica_context().replica_id.unique_id


def _picklable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling (its type decides retry vs. error row), else its text:
    one unpicklable exception must not fail the other calls of the batch."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send the text
        return RuntimeError(f"{type(e).__name__}: {e}")


class Coalescer:
    """Gathers the calls made in one event-loop iteration into one `call_batch` request per routing key.

    `handle` is a Serve `DeploymentHandle` of a `BatchedCalls` deployment. `sticky` (a `PinnedRouter`
    deployment): a session's calls go to the replica that answered its first one; else Serve picks any
    replica. Not picklable: build it in the process that uses it.
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
        self._homes: OrderedDict[str, str] = OrderedDict()  # session id -> its replica's routing key

    def forget(self, session_id: str) -> None:
        """The session ended: its next call (none expected) may go to any replica."""
        self._homes.pop(session_id, None)

    def call(self, method: str, *args: Any, session_id: str | None = None) -> asyncio.Future:
        """Queue `method(*args)` on the deployment; the future resolves to its result or raises its error."""
        loop = asyncio.get_running_loop()
        key = None
        if self._sticky and session_id:
            key = self._homes.get(session_id)
            if key is not None:
                self._homes.move_to_end(session_id)
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = {}
        batch = pending.get(key)
        if batch is None:
            batch = pending[key] = []
            loop.call_soon(self._flush, loop, key)
        fut = loop.create_future()
        batch.append((method, args, session_id, fut))
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
            response = self._route(key).call_batch.remote([(m, a) for m, a, *_ in batch])
        except Exception as e:  # noqa: BLE001 - e.g. the app is gone: every caller sees it
            _fail(batch, e)
            return
        task = loop.create_task(self._deliver(response, batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, response: Any, batch: list) -> None:
        try:
            replica, outs = await response
        except asyncio.CancelledError:
            for *_, fut in batch:
                fut.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - the request failed as a whole: so did each call in it
            _fail(batch, e)
            return
        if self._sticky:
            self._settle(replica, [sid for _, _, sid, _ in batch if sid])
        for (*_, fut), (ok, value) in zip(batch, outs, strict=True):
            if fut.done():  # its caller gave up (episode timeout)
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _settle(self, replica: str, session_ids: list[str]) -> None:
        """Each session's call ran on `replica`: that is where the session lives now (a first call seeded it
        there; a session whose replica died was lost, and its re-seed ran here)."""
        for sid in session_ids:
            self._homes[sid] = replica
        while len(self._homes) > MAX_HOMES:
            self._homes.popitem(last=False)


def _fail(batch: list, error: BaseException) -> None:
    for *_, fut in batch:
        if not fut.done():
            fut.set_exception(error)
