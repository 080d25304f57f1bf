"""A rollout stream for asynchronous trainers: collection keeps running while the trainer pulls batches.

    stream = RolloutStream(collector, tasks, batch_groups=8, over_sample=2, max_staleness=1)
    async with stream:
        async for batch in stream:              # list[RolloutGroup], complete groups
            train(batch); stream.set_policy_version(step)
    with SyncRolloutStream(stream) as s:        # the same from synchronous code (a Ray Train worker)
        for table in s.tables(): ...            # Arrow (ROLLOUT_SCHEMA): ray.data.from_arrow(table)

Finished groups wait in a bounded buffer: no group starts while `max_buffered` wait, and at most
`max_in_flight` run, so the stream holds at most `max_buffered + max_in_flight` groups. No group is handed
out whose oldest generated span is more than `max_staleness` policy versions behind the version the trainer
set: it is run again (`on_stale="rerun"`) or dropped, and counted. With `over_sample`, each batch starts
that many extra groups and cancels its stragglers once `batch_groups` of its groups have finished: their
episodes are cancelled on the agent actors, close their env sessions and leave no row (a result that
arrives anyway is discarded and counted). A batch is taken from the buffer whole or not at all, so a
consumer cancelled while it waits takes nothing: nothing is lost or handed out twice.

Weights may be updated while groups run (`collect.weight_update`, gym_ray.models.updates): each span
carries the version that sampled it, so the staleness rule holds across the update. An episode dropped by
an update (`drop`: status `aborted`, its last span's finish reason `weight_update`) is handed out as its
group's masked row (`on_dropped="mask"`) or its whole group runs again (`"rerun"`, counted).

The collector's monitors (`collect.monitors`) see every finished group. When one set to `on_alert: stop`
fires, the stream stops like `close()`, except that the groups already buffered are still handed out;
`stopped_by` holds the alert.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from gym_ray.background import BackgroundLoop
from gym_ray.collect.api import Collector, tables_to_groups
from gym_ray.collect.plan import GroupSpec, group_id_for
from gym_ray.collect.scheduler import Feed
from gym_ray.errors import Status
from gym_ray.models.updates import CUT as WEIGHT_UPDATE
from gym_ray.types import RolloutGroup, Task, rollouts_to_arrow

# groups started, accepted (fresh, buffered), handed out, stale and re-run or dropped, cancelled stragglers,
# results of cancelled groups discarded (they had finished before the cancel reached them), groups re-run
# because a weight update dropped one of their episodes
COUNTS = ("started", "accepted", "handed_out", "stale_rerun", "stale_dropped", "cancelled", "discarded",
          "dropped_rerun")


@dataclass
class _Batch:
    """Groups started for one batch: `quota` fresh tasks, plus re-runs; closes after `needed` are accepted."""

    quota: int
    started: int = 0
    accepted: int = 0
    members: set[str] = field(default_factory=set)


class RolloutStream:
    """Complete groups of `tasks` (any iterable, endless ones too), `num_repeats` rollouts each, handed
    out `batch_groups` at a time while collection goes on (module docstring)."""

    def __init__(self, collector: Collector, tasks: Iterable[Task], *, batch_groups: int, over_sample: int = 0,
                 max_staleness: int | None = None, on_stale: Literal["rerun", "drop"] = "rerun",
                 max_buffered: int | None = None, max_in_flight: int | None = None,
                 num_repeats: int | None = None, policy_version: int = 0,
                 on_dropped: Literal["mask", "rerun"] | None = None):
        if batch_groups < 1 or over_sample < 0:
            raise ValueError(f"batch_groups must be >= 1 and over_sample >= 0, got {batch_groups}, {over_sample}")
        if max_staleness is not None and max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0 or None, got {max_staleness}")
        if on_stale not in ("rerun", "drop"):
            raise ValueError(f"on_stale must be 'rerun' or 'drop', got {on_stale!r}")
        self.collector = collector
        self.batch_groups = batch_groups
        self.quota = batch_groups + over_sample
        self.max_staleness = max_staleness
        self.on_stale = on_stale
        self.on_dropped = on_dropped or collector.config.collect.on_dropped
        if self.on_dropped not in ("mask", "rerun"):
            raise ValueError(f"on_dropped must be 'mask' or 'rerun', got {self.on_dropped!r}")
        self.max_buffered = max_buffered or 2 * batch_groups
        self.max_in_flight = max_in_flight or self.quota
        if self.max_buffered < 1 or self.max_in_flight < 1:
            raise ValueError("max_buffered and max_in_flight must be >= 1")
        self.num_repeats = num_repeats or collector.num_repeats
        self.policy_version = policy_version
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNTS, 0))
        self.peak: Counter[str] = Counter()  # most groups ever buffered / running / held at once
        self.run_id = uuid.uuid4().hex
        self._source = iter(tasks)
        self._exhausted = False
        self._reruns: deque[Task] = deque()
        self._buffer: deque[tuple[RolloutGroup, Task]] = deque()
        self._running: dict[str, tuple[Task, _Batch]] = {}
        self._open: list[_Batch] = []  # oldest first; the last one admits fresh tasks
        self._feed = Feed()
        self._tick = asyncio.Event()
        self._pumps: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._error: BaseException | None = None
        self._serial = 0

    # -- the trainer's side ---------------------------------------------------------------------------

    async def start(self) -> RolloutStream:
        if not self._pumps:
            self._tick = asyncio.Event()
            self._pumps.append(asyncio.create_task(self._collect(self._feed)))
            self._admit()
        return self

    def set_policy_version(self, version: int) -> None:
        """The trainer's current policy version: buffered groups now too old are re-run or dropped."""
        self.policy_version = version
        kept = [(g, t) for g, t in self._buffer if not self._stale(g)]
        for g, t in self._buffer:
            if self._stale(g):
                self._on_stale(t)
        self._buffer = deque(kept)
        self._admit()
        self._notify()

    async def next_batch(self, n: int | None = None) -> list[RolloutGroup]:
        """The next `n` (default `batch_groups`) complete, fresh groups, in the order they finished; fewer
        once the tasks are used up, [] when the stream has ended."""
        n = n or self.batch_groups
        await self.start()
        while len(self._buffer) < n and not self.ended:
            if self._error is not None:
                raise self._error
            await self.changed()
        if self._error is not None and len(self._buffer) < n:
            raise self._error
        taken = [self._buffer.popleft()[0] for _ in range(min(n, len(self._buffer)))]
        self.counts["handed_out"] += len(taken)
        self._admit()
        return taken

    def __aiter__(self) -> AsyncIterator[list[RolloutGroup]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[RolloutGroup]]:
        while batch := await self.next_batch():
            yield batch

    async def changed(self) -> None:
        """Return once the stream's state next changes (a group finished or was taken, a version set)."""
        await self._tick.wait()

    @property
    def ended(self) -> bool:
        """No task left to start, none running, none to re-run."""
        return self._exhausted and not self._running and not self._reruns

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "buffered": len(self._buffer), "running": len(self._running),
                "peak_buffered": self.peak["buffered"], "peak_running": self.peak["running"],
                "peak_held": self.peak["held"], "policy_version": self.policy_version,
                "admission_paused": len(self._buffer) >= self.max_buffered}

    async def close(self) -> None:
        """Cancel what runs (sessions closed, no rows) and stop; groups still buffered are let go."""
        if self._running:
            self._cancel(set(self._running))
        self._exhausted = True
        self._reruns.clear()
        self._feed.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._pumps:
            await asyncio.wait(self._pumps, timeout=60)
        self._notify()

    @property
    def stopped_by(self):
        """The alert of the monitor that stopped the stream (`collect.monitors`), or None."""
        return self.collector.stopped_by

    def _stop(self) -> None:
        """A monitor's stop: cancel what runs, start nothing more; the buffer is still handed out."""
        if self._running:
            self._cancel(set(self._running))
        self._exhausted = True
        self._reruns.clear()
        self._feed.close()

    async def __aenter__(self) -> RolloutStream:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- collection -----------------------------------------------------------------------------------

    async def _collect(self, feed: Feed) -> None:
        try:
            async for table in self.collector.scheduler.run(feed):
                monitors = self.collector.monitors
                if monitors is not None:
                    await monitors.observe(table)
                for group in tables_to_groups([table]):
                    self._finish(group)
                if monitors is not None and monitors.stopped_by is not None and not self._exhausted:
                    self._stop()
                self._admit()
                self._notify()
        except Exception as e:  # the trainer sees it at its next pull
            self._error = e
        finally:
            self._notify()

    def _admit(self) -> None:
        """Start groups while fewer than `max_in_flight` run and the buffer has room."""
        started = []
        while len(self._running) < self.max_in_flight and len(self._buffer) < self.max_buffered:
            spec = self._next_spec()
            if spec is None:
                break
            started.append(spec)
        if started and self._feed.closed:  # re-runs after the last run ended (a version swept the buffer)
            self._feed = Feed()
            self._feed.submit(started)
            self._pumps.append(asyncio.create_task(self._collect(self._feed)))
        elif started:
            self._feed.submit(started)
        elif self.ended:
            self._feed.close()
        self._measure()

    def _next_spec(self) -> GroupSpec | None:
        if self._reruns:
            task = self._reruns.popleft()
            batch = self._open[0] if self._open else self._new_batch()
        else:
            task = None if self._exhausted else next(self._source, None)
            if task is None:
                self._exhausted = True
                return None
            batch = self._open[-1] if self._open and self._open[-1].started < self.quota else self._new_batch()
            batch.started += 1
        self._serial += 1
        gid = group_id_for(self.run_id, task.env, f"{task.task_id}\x00{self._serial}")
        batch.members.add(gid)
        self._running[gid] = (task, batch)
        self.counts["started"] += 1
        return GroupSpec(group_id=gid, task=task, group_size=self.num_repeats)

    def _new_batch(self) -> _Batch:
        self._open.append(_Batch(quota=self.quota))
        return self._open[-1]

    def _finish(self, group: RolloutGroup) -> None:
        entry = self._running.pop(group.group_id, None)
        if entry is None:  # cancelled after it had finished on its actor
            self.counts["discarded"] += 1
            return
        task, batch = entry
        batch.members.discard(group.group_id)
        if self.on_dropped == "rerun" and dropped_by_update(group):
            self._reruns.append(task)
            self.counts["dropped_rerun"] += 1
        elif self._stale(group):
            self._on_stale(task)
        else:
            self._buffer.append((group, task))
            self.counts["accepted"] += 1
            batch.accepted += 1
        if batch.accepted >= self.batch_groups and batch.members:
            self._cancel(set(batch.members))
        closed = batch.accepted >= self.batch_groups or (batch.started >= batch.quota and not batch.members)
        if closed and batch in self._open:
            self._open.remove(batch)

    def _cancel(self, group_ids: set[str]) -> None:
        for gid in group_ids:
            _, batch = self._running.pop(gid)
            batch.members.discard(gid)
        self.counts["cancelled"] += len(group_ids)
        self._feed.withdraw(group_ids)
        t = asyncio.create_task(self.collector.scheduler.cancel(group_ids))
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    def _stale(self, group: RolloutGroup) -> bool:
        versions = [v for r in group.rollouts for v in r.gen_policy_versions]
        return (self.max_staleness is not None and bool(versions)
                and self.policy_version - min(versions) > self.max_staleness)

    def _on_stale(self, task: Task) -> None:
        if self.on_stale == "rerun":
            self._reruns.append(task)
            self.counts["stale_rerun"] += 1
        else:
            self.counts["stale_dropped"] += 1

    def _measure(self) -> None:
        for name, value in (("buffered", len(self._buffer)), ("running", len(self._running)),
                            ("held", len(self._buffer) + len(self._running))):
            self.peak[name] = max(self.peak[name], value)

    def _notify(self) -> None:
        """Wake every waiting consumer (each waits on the event current when it started waiting)."""
        self._tick.set()
        self._tick = asyncio.Event()


def dropped_by_update(group: RolloutGroup) -> bool:
    """One of the group's episodes was dropped by a weight update (`collect.weight_update: drop`)."""
    return any(r.status == Status.ABORTED and r.call_finish_reasons[-1:] == [WEIGHT_UPDATE] for r in group.rollouts)


class SyncRolloutStream:
    """A `RolloutStream` for synchronous code: it runs on a loop of its own thread."""

    def __init__(self, stream: RolloutStream):
        self.stream = stream
        self._loop = BackgroundLoop("gym_ray-stream")
        self._loop.run(self._start())

    async def _start(self) -> None:
        await self.stream.start()

    def next_batch(self, n: int | None = None, timeout: float | None = None) -> list[RolloutGroup]:
        return self._loop.run(self.stream.next_batch(n), timeout)

    def set_policy_version(self, version: int) -> None:
        self._loop.run(self._set(version))

    async def _set(self, version: int) -> None:
        self.stream.set_policy_version(version)

    def stats(self) -> dict[str, Any]:
        return self._loop.run(self._stats())

    async def _stats(self) -> dict[str, Any]:
        return self.stream.stats()

    def __iter__(self) -> Iterator[list[RolloutGroup]]:
        while batch := self.next_batch():
            yield batch

    def tables(self) -> Iterator[pa.Table]:
        """Each batch as one Arrow table (ROLLOUT_SCHEMA), for `ray.data.from_arrow` or a Ray Train loop."""
        for batch in self:
            yield rollouts_to_arrow([r for g in batch for r in g.rollouts])

    def close(self) -> None:
        if not self._loop.closed:
            self._loop.run(self.stream.close())
            self._loop.stop()

    def __enter__(self) -> SyncRolloutStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
