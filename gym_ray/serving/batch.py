"""One Serve handle call for many: the concurrent calls of one process to one deployment, coalesced.

py-spy on an agent actor with policy and env on Serve (c=64) put ~40% of its CPU in Serve's per-request
machinery (router assignment, handle and router metrics, the gRPC call) and a few % in the env's own
code; the replica's side looked the same. The cost is per request, not per byte, so the calls a process
makes in one event-loop iteration to the same deployment go as one `call_batch` request, which the replica
runs concurrently, answering each call's result or exception. A batch holds at most one call per episode
at a time (an episode awaits each call), so nothing of one episode is reordered. With session affinity
(`routing.PinnedRouter`), each answer names the replica that ran it; a session's later calls are grouped
by that replica and routed to it, so every call of a session lands on one replica and the calls of one
iteration split by replica, not by session.

One call must not fail the others of its batch. Each answer is pickled on its own, so one that cannot be
pickled or read back fails its own call only. Serve's gRPC transport refuses a message over
`TRANSPORT_LIMIT` (either way), and a batch adds its calls' sizes up: the replica sends answers up to
`ANSWER_BUDGET` with the response and keeps the rest, which the client fetches by reference (no size
limit), so no call is run twice. A request refused for its size ran nothing, so it goes again by
reference. A batch that fails as a whole otherwise (its replica died, back pressure) fails each of its
calls with that error, which is what each call would have met alone.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any

from ray import cloudpickle

from gym_ray import compat

STICKY_ROUTER = "gym_ray.serving.routing:PinnedRouter"  # the request router of sticky deployments
REPLICA_KEY_PREFIX = "gym-ray-replica-"  # + a replica's unique id: the routing key of its sessions
MAX_HOMES = 1 << 17  # sessions whose replica a Coalescer remembers; the oldest unused one goes first
MAX_BATCH = 64  # calls per request: more would keep replica-side queue metrics (autoscaling) blind
# Serve's limit on a gRPC handle message (its own setting, read the way Serve reads it), and the share of
# it a batch response may fill with answers (the rest is framing and room for error)
TRANSPORT_LIMIT = compat.grpc_message_limit()
ANSWER_BUDGET = TRANSPORT_LIMIT * 3 // 4
KEPT_ANSWER_TTL_S = 300.0  # an answer kept for a client that never fetched it (its caller gave up) expires


class BatchedCalls:
    """Mixin for a Serve deployment class: `call_batch` runs several of its own methods in one request."""

    async def call_batch(self, calls: list[tuple[str, tuple]],
                         budget: int | None = None) -> tuple[str, list[bytes | str]]:
        """This replica's routing key, and per call its answer: `(True, result)` or `(False, exception)`,
        pickled; or, once the answers sent reach `budget` bytes, the key of an answer kept here for
        `take_answer`."""

        async def one(name: str, args: tuple) -> Any:
            return await getattr(self, name)(*args)

        outs = await asyncio.gather(*(one(n, a) for n, a in calls), return_exceptions=True)
        answers: list[bytes | str] = []
        room = budget
        for out in outs:
            blob = _answer(out)
            if room is None or len(blob) <= room:
                answers.append(blob)
                room = None if room is None else room - len(blob)
            else:
                answers.append(self._keep(blob))
        return replica_key(), answers

    async def take_answer(self, key: str) -> bytes:
        """An answer `call_batch` kept (called by reference: it may be larger than the gRPC limit)."""
        kept = self._kept_answers().pop(key, None)
        if kept is None:
            raise RuntimeError(f"answer {key} is no longer kept here (expired after {KEPT_ANSWER_TTL_S:.0f} s)")
        return kept[1]

    def _kept_answers(self) -> OrderedDict[str, tuple[float, bytes]]:
        kept = self.__dict__.get("_gym_ray_kept")
        if kept is None:
            kept = self.__dict__["_gym_ray_kept"] = OrderedDict()
        return kept

    def _keep(self, blob: bytes) -> str:
        kept = self._kept_answers()
        now = time.monotonic()
        while kept and next(iter(kept.values()))[0] < now:
            kept.popitem(last=False)
        key = uuid.uuid4().hex
        kept[key] = (now + KEPT_ANSWER_TTL_S, blob)
        return key


def replica_key() -> str:
    """The routing key that `PinnedRouter` sends to the calling replica."""
    from ray import serve

    return REPLICA_KEY_PREFIX + serve.get_replica_context().replica_id.unique_id


def _answer(out: Any) -> bytes:
    """One call's outcome, pickled on its own: an answer that cannot be fails its own call only."""
    outcome = (False, _picklable(out)) if isinstance(out, BaseException) else (True, out)
    try:
        return pickle.dumps(outcome, protocol=5)
    except Exception:  # noqa: BLE001 - e.g. a local class: the transport used to send it with cloudpickle
        try:
            return cloudpickle.dumps(outcome, protocol=5)
        except Exception as e:  # noqa: BLE001 - any failure to pickle means: send the error instead
            return pickle.dumps((False, RuntimeError(f"its answer could not be pickled: {type(e).__name__}: {e}")))


def _picklable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling (its type decides retry vs. error row), else its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send the text
        return RuntimeError(f"{type(e).__name__}: {e}")


def refused_for_size(e: BaseException) -> bool:
    """The replica's gRPC server refused a request for its size, before running it ("CLIENT: Received
    message larger than max" is a response refused after its calls ran: never sent again)."""
    return "SERVER: Received message larger than max" in str(e)


class Coalescer:
    """Gathers the calls made in one event-loop iteration into one `call_batch` request per routing key.

    `handle` is a Serve `DeploymentHandle` of a `BatchedCalls` deployment; `by_reference`: it uses Serve's
    by-reference transport (no size limit), else gRPC. `sticky` (a `PinnedRouter` deployment): a session's
    calls go to the replica that answered its first one; else Serve picks any replica. Not picklable:
    build it in the process that uses it.
    """

    def __init__(self, handle: Any, *, sticky: bool = False, max_batch: int = MAX_BATCH,
                 by_reference: bool = False) -> None:
        self._handle = handle
        self._sticky = sticky
        self._max_batch = max_batch
        self._budget = None if by_reference else ANSWER_BUDGET
        self._routed: dict[tuple[str | None, bool], Any] = {}
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, list]] = (
            weakref.WeakKeyDictionary()
        )
        self._in_flight: set[asyncio.Task] = set()
        self._homes: OrderedDict[str, str] = OrderedDict()  # session id -> its replica's routing key

    def forget(self, session_id: str) -> None:
        """The session ended: its next call (none expected) may go to any replica."""
        self._homes.pop(session_id, None)

    def share_home(self, session_id: str, others: list[str]) -> None:
        """Sessions forked from `session_id` live on its replica: route their calls there too."""
        home = self._homes.get(session_id)
        if home is not None:
            for sid in others:
                self._homes[sid] = home

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

    def _route(self, key: str | None, by_reference: bool = False) -> Any:
        h = self._routed.get((key, by_reference))
        if h is None:
            h = self._handle.options(session_id=key) if key is not None else self._handle
            if by_reference:
                h = compat.with_transport(h, by_reference=True)
            self._routed[(key, by_reference)] = h
        return h

    def _flush(self, loop: asyncio.AbstractEventLoop, key: str | None) -> None:
        batch = self._pending[loop].pop(key, None)
        if batch:
            self._send(loop, key, batch, by_reference=False)

    def _send(self, loop: asyncio.AbstractEventLoop, key: str | None, batch: list, *, by_reference: bool) -> None:
        budget = None if by_reference else self._budget
        try:
            response = self._route(key, by_reference).call_batch.remote([(m, a) for m, a, *_ in batch], budget)
        except Exception as e:  # noqa: BLE001 - e.g. the app is gone: every caller sees it
            _fail(batch, e)
            return
        self._track(loop.create_task(self._deliver(response, key, batch, by_reference)))

    def _track(self, task: asyncio.Task) -> None:
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, response: Any, key: str | None, batch: list, by_reference: bool) -> None:
        try:
            replica, answers = await response
        except asyncio.CancelledError:
            for *_, fut in batch:
                fut.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - the request failed as a whole
            if not by_reference and refused_for_size(e):
                # refused before it ran: the same calls, by reference (no size limit there)
                self._send(asyncio.get_running_loop(), key, batch, by_reference=True)
            else:
                _fail(batch, e)
            return
        if self._sticky:
            self._settle(replica, [sid for _, _, sid, _ in batch if sid])
        for (*_, fut), answer in zip(batch, answers, strict=True):
            if fut.done():  # its caller gave up (episode timeout); a kept answer expires on the replica
                continue
            if isinstance(answer, str):
                self._track(asyncio.get_running_loop().create_task(self._fetch(replica, answer, fut)))
            else:
                _resolve(fut, answer)

    async def _fetch(self, replica: str, answer_key: str, fut: asyncio.Future) -> None:
        """An answer the replica kept back from a full response, by reference from that replica."""
        try:
            blob = await self._route(replica if self._sticky else None, True).take_answer.remote(answer_key)
        except Exception as e:  # noqa: BLE001 - this call's answer is lost, and only this call's
            if not fut.done():
                fut.set_exception(e)
            return
        _resolve(fut, blob)

    def _settle(self, replica: str, session_ids: list[str]) -> None:
        """Each session's call ran on `replica`: that is where the session lives now (a first call seeded it
        there; a session whose replica died was lost, and its re-seed ran here)."""
        for sid in session_ids:
            self._homes[sid] = replica
        while len(self._homes) > MAX_HOMES:
            self._homes.popitem(last=False)


def _resolve(fut: asyncio.Future, blob: bytes) -> None:
    if fut.done():
        return
    try:
        ok, value = pickle.loads(blob)
    except Exception as e:  # noqa: BLE001 - e.g. a class this process cannot import: this call fails
        fut.set_exception(RuntimeError(f"its answer could not be read: {type(e).__name__}: {e}"))
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _fail(batch: list, error: BaseException) -> None:
    for *_, fut in batch:
        if not fut.done():
            fut.set_exception(error)
