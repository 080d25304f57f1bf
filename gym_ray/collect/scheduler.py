"""Driver side of collection: spreads chunks of groups over agent actors, keeps each busy, and
re-dispatches the groups of an actor that died (up to `max_retries`, then an `infra_error` row each)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator

import pyarrow as pa
import ray

from gym_ray.agents.base import infra_error_types
from gym_ray.collect.plan import GroupSpec
from gym_ray.collect.wiring import WorkerSetup
from gym_ray.collect.worker import AgentActor
from gym_ray.episodes import failed_row
from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage, Status
from gym_ray.types import rollouts_to_arrow, table_from_ipc


class ActorStartError(RuntimeError):
    """An agent actor could not build its clients (bad config, missing deployment, ...)."""


class Scheduler:
    """A pool of agent actors; `run(groups)` yields Arrow tables of complete groups as they finish."""

    CHUNKS_PER_ACTOR = 2
    RECOVERY_TIMEOUT_S = 180.0

    def __init__(self, setup: WorkerSetup, num_agents: int, concurrency: int, max_retries: int = 2,
                 namespace_prefix: str = "gym-ray-agent"):
        self.per_actor = max(1, math.ceil(concurrency / num_agents))
        setup.concurrency = self.per_actor
        self.setup = setup
        self.max_retries = max_retries
        self.infra = infra_error_types()
        self.name_prefix = namespace_prefix
        places = _round_the_nodes(num_agents)
        self.actors = [AgentActor.options(scheduling_strategy=places[i]).remote(setup, f"{namespace_prefix}-{i}")
                       for i in range(num_agents)]
        self._started = False
        self.regrouped = 0  # groups re-dispatched after their agent actor died
        self._cancelled: set[str] = set()

    async def start(self) -> list[dict]:
        try:
            info = await asyncio.gather(*(a.ready.remote() for a in self.actors))
        except ray.exceptions.RayError as e:
            self.shutdown()
            raise ActorStartError(f"agent actor failed to start: {_root_cause(e)}") from None
        self._started = True
        return list(info)

    def _chunk_size(self, group_size: int) -> int:
        return max(1, math.ceil(self.per_actor / group_size))

    async def _recover(self, i: int) -> bool:
        """Wait for actor `i` to come back (Ray restarts it); replace it if it is gone for good."""
        replaced = 0
        deadline = time.monotonic() + self.RECOVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.actors[i].ready.remote(), self.RECOVERY_TIMEOUT_S)
                return True
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnschedulableError):
                if replaced >= self.max_retries:
                    return False
                replaced += 1
                self.actors[i] = AgentActor.options(scheduling_strategy="SPREAD").remote(
                    self.setup, f"{self.name_prefix}-{i}-r{replaced}")
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, TimeoutError):
                await asyncio.sleep(0.5)
        return False

    async def cancel(self, group_ids: set[str]) -> None:
        """Cancel these groups on the actors running them (their episodes close their env sessions): they
        yield no row, nor run again if their actor dies. Take unsent ones out of a `Feed` first (`withdraw`)."""
        self._cancelled |= group_ids
        await asyncio.gather(*(a.cancel.remote(sorted(group_ids)) for a in self.actors), return_exceptions=True)

    async def run(self, groups: list[GroupSpec] | Feed) -> AsyncIterator[pa.Table]:
        """Tables of `groups` as they finish; with a `Feed`, groups submitted to it while this runs, until it
        is closed and they are done."""
        if not self._started:
            await self.start()
        feed = groups if isinstance(groups, Feed) else None
        pending: deque[GroupSpec] = feed.pending if feed is not None else deque(groups)
        lost_count: Counter[str] = Counter()
        out: asyncio.Queue = asyncio.Queue()
        if feed is not None:
            feed.wake = out
        outstanding = {i: 0 for i in range(len(self.actors))}
        healthy = set(outstanding)
        recovering: set[int] = set()
        tasks: set[asyncio.Task] = set()

        def spawn(coro) -> None:
            t = asyncio.create_task(coro)
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        def give_up(chunk: list[GroupSpec], status: Status, cause: str, kind: FailureKind) -> None:
            failure = Failure(stage=FailureStage.AGENT, kind=kind, delivery=Delivery.POSSIBLY_DELIVERED)
            rows = [failed_row(g.task, g, k, status, f"agent actor failed: {cause}", failure, g.attempt)
                    for g in chunk for k in range(g.group_size)]
            if rows:
                out.put_nowait(rollouts_to_arrow(rows))

        async def drive(i: int, chunk: list[GroupSpec]) -> None:
            received: set[str] = set()
            try:
                async for ref in self.actors[i].run_chunk.remote(chunk):
                    table = table_from_ipc(await ref)
                    received.update(table.column("group_id").unique().to_pylist())
                    out.put_nowait(table)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                lost = [g for g in chunk if g.group_id not in received and g.group_id not in self._cancelled]
                if not isinstance(e, self.infra):  # a bug in the actor: never silently dropped, not retried
                    give_up(lost, Status.ABORTED, _root_cause(e), FailureKind.EXCEPTION)
                else:
                    for g in lost:
                        lost_count[g.group_id] += 1
                    give_up([g for g in lost if lost_count[g.group_id] > self.max_retries],
                            Status.INFRA_ERROR, _root_cause(e), FailureKind.PEER_LOST)
                    again = [g.model_copy(update={"attempt": g.attempt + 1}) for g in lost
                             if lost_count[g.group_id] <= self.max_retries]
                    self.regrouped += len(again)
                    pending.extendleft(reversed(again))
                    if i in healthy:
                        healthy.discard(i)
                        recovering.add(i)
                        spawn(recover(i))
            finally:
                self._cancelled.difference_update(g.group_id for g in chunk)
                out.put_nowait(("chunk_done", i))

        async def recover(i: int) -> None:
            ok = await self._recover(i)
            recovering.discard(i)
            if ok:
                healthy.add(i)
            out.put_nowait(("recovered", i))

        def dispatch() -> None:
            if feed is not None:  # a stream bounds its groups in flight itself: each to the least busy actor
                while pending and healthy:
                    i = min(sorted(healthy), key=outstanding.__getitem__)
                    size = self._chunk_size(pending[0].group_size)
                    chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                    outstanding[i] += 1
                    spawn(drive(i, chunk))
                return
            for i in sorted(healthy):
                while outstanding[i] < self.CHUNKS_PER_ACTOR and pending:
                    size = self._chunk_size(pending[0].group_size)
                    chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                    outstanding[i] += 1
                    spawn(drive(i, chunk))

        try:
            dispatch()
            while any(outstanding.values()) or recovering or (pending and healthy) or (feed and not feed.closed):
                item = await out.get()
                if isinstance(item, tuple):
                    if item[0] == "chunk_done":
                        outstanding[item[1]] -= 1
                    dispatch()
                else:
                    yield item
                if pending and not healthy and not recovering and not any(outstanding.values()):
                    give_up(list(pending), Status.INFRA_ERROR, "no agent actor is left alive",
                            FailureKind.PEER_LOST)
                    pending.clear()
            while not out.empty():
                item = out.get_nowait()
                if not isinstance(item, tuple):
                    yield item
        finally:
            if feed is not None:
                feed.wake = None
            for t in tasks:
                t.cancel()

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


class Feed:
    """Work for one long `Scheduler.run`: groups submitted while it goes on (a rollout stream's admission)."""

    def __init__(self) -> None:
        self.pending: deque[GroupSpec] = deque()
        self.closed = False
        self.wake: asyncio.Queue | None = None  # the running `run`'s inbox

    def submit(self, groups: list[GroupSpec]) -> None:
        """Queue `groups` and wake the run to dispatch them."""
        self.pending.extend(groups)
        self._poke()

    def withdraw(self, group_ids: set[str]) -> None:
        """Take these groups out if they have not been sent to an actor yet."""
        kept = [g for g in self.pending if g.group_id not in group_ids]
        self.pending.clear()
        self.pending.extend(kept)

    def close(self) -> None:
        """No more groups: the run ends once those already submitted are done."""
        self.closed = True
        self._poke()

    def _poke(self) -> None:
        if self.wake is not None:
            self.wake.put_nowait(("fed", -1))


def _round_the_nodes(n: int) -> list:
    """Where the `n` agent actors go: round the alive nodes that have CPUs (a `num-cpus: 0` head is left to
    Ray's own work), so `num_agents >= nodes` uses every node. Ray's SPREAD and soft affinity are best
    effort (two zero-CPU actors often shared a node here), so the affinity is hard; an actor whose node is
    lost cannot restart there and `_recover` replaces it, placed by SPREAD on the nodes left."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [node for node in ray.nodes() if node.get("Alive")]
    nodes = [node["NodeID"] for node in alive if node.get("Resources", {}).get("CPU", 0) > 0]
    nodes = nodes or [node["NodeID"] for node in alive]
    if len(nodes) < 2:
        return ["DEFAULT"] * n
    return [NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False) for i in range(n)]


def _root_cause(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
