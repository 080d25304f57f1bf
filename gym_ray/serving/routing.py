"""The request router of sticky deployments (several replicas or an autoscaler): a session's calls reach
the replica that holds it.

Serve's `ConsistentHashRouter` hashes a session id onto a replica ring. The handle client used to coalesce
calls per hashed shard of the session id (64 shards), so one event-loop iteration's calls split into up
to 64 requests, and two replicas cost 3-5x the CPU of one (orchestration benchmark). Now each `call_batch`
answer names the replica that ran it, the `Coalescer` remembers it per session, and a session's later
calls carry that replica's key (`batch.replica_key`): this router sends them to that replica, so
one iteration's calls split by replica. A call without a key (a session's first, with the other first
calls of its iteration) goes to the replicas in turn (another one if it refuses), so new sessions spread
evenly, a new replica included. Other keys (HTTP clients' `X-Session-Id`, a replica that is gone)
take the consistent-hash path; a session whose replica is gone then meets `SessionLostError`, as any
session on a dead replica does. A scale-up moves no session (the ring would have moved some).
"""

from __future__ import annotations

from typing import Any

from gym_ray import compat
from gym_ray.serving.batch import REPLICA_KEY_PREFIX


class PinnedRouter(compat.consistent_hash_router()):
    """`ConsistentHashRouter`, except that a `gym-ray-replica-<id>` key goes to replica `<id>` only and
    no key means the next replica in turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_key: dict[str, Any] = {}  # routing key -> running replica
        self._turn = 0  # round robin position of keyless calls

    def update_replicas(self, replicas: list) -> None:
        super().update_replicas(replicas)
        self._by_key = {REPLICA_KEY_PREFIX + r.replica_id.unique_id: r for r in replicas}

    async def choose_replicas(self, candidate_replicas: list, pending_request: Any = None) -> list[list]:
        key = pending_request.metadata.session_id if pending_request is not None else None
        if not key:  # round robin: new sessions spread evenly, a new replica included
            ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
            first = self._turn % len(ordered)
            self._turn += 1
            return [[ordered[first]], ordered[:first] + ordered[first + 1:]]
        replica = self._by_key.get(key)
        if replica is None:
            return await super().choose_replicas(candidate_replicas, pending_request)
        compat.wait_for_replica(pending_request)  # a busy replica is waited for, not bypassed
        return [[replica]]
