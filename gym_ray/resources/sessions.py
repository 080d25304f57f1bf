"""Per-episode sessions with bounded memory: idle ones expire (TTL), the oldest go past a cap.

An agent that dies mid-episode never calls close_session; without expiry its state would stay
forever. The store is an LRU-ordered dict, so expiry only looks at the oldest entries.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from gym_ray.resources.server import Session


class SessionStore:
    def __init__(self, ttl_s: float, max_sessions: int, clock=time.monotonic) -> None:
        if ttl_s <= 0 or max_sessions <= 0:
            raise ValueError("session_ttl_s and max_sessions must be positive")
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        # An in-process env may be served from a second loop thread after its first one wedged.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def put(self, session: Session) -> Session | None:
        """Add (or replace) a session; returns the replaced one so its resources can be released."""
        with self._lock:
            old = self._sessions.pop(session.id, None)
            session.last_used = self._clock()
            self._sessions[session.id] = session
        return old

    def get(self, session_id: str) -> Session | None:
        """Look up and mark as used (an episode that keeps calling never expires)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_used = self._clock()
                self._sessions.move_to_end(session_id)
        return session

    def pop(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def expire(self) -> list[Session]:
        """Remove sessions idle longer than the TTL, and the oldest beyond the cap; return them."""
        now = self._clock()
        dropped = []
        with self._lock:
            while self._sessions:
                sid, oldest = next(iter(self._sessions.items()))
                if now - oldest.last_used <= self.ttl_s and len(self._sessions) <= self.max_sessions:
                    break
                del self._sessions[sid]
                dropped.append(oldest)
        return dropped
