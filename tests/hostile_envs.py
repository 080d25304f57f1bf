"""Environments that misbehave in the ways that once hurt other episodes: hooks that hang, block the event loop, flood output.

Each reads what to do from the task's `verifier_metadata`, so one run mixes hostile and normal episodes.
Tests pickle this module by value (`ray.cloudpickle.register_pickle_by_value`) so agent actors get it.
"""

from __future__ import annotations

import threading
import time

from gym_ray.resources import ResourceServer, tool


class HangingSyncVerify(ResourceServer):
    """`hang_s: N` -> a sync verify that does not return for N s (or until `release` is set, in-process)."""

    def __init__(self, release: threading.Event | None = None):
        self.release = release

    def verify(self, task, messages):
        hang = task.verifier_metadata.get("hang_s")
        if hang:
            self.release.wait(hang) if self.release else time.sleep(hang)
        return 1.0


class LoopBlockingVerify(ResourceServer):
    """`block_s: N` -> an async verify that calls blocking code: it freezes whatever loop runs it."""

    async def verify(self, task, messages):
        time.sleep(task.verifier_metadata.get("block_s", 0))
        return 1.0


class Flood(ResourceServer):
    """A tool whose output is `size` characters (10 MB by default)."""

    @tool
    def dump(self) -> str:
        """Dump everything."""
        return "x" * int(self.task.verifier_metadata.get("size", 10_000_000))

    def verify(self, task, messages):
        return 1.0


class RaisingVerify(ResourceServer):
    """A verifier with a bug on some rows (NeMo Gym rows without the field it reads)."""

    def verify(self, task, messages):
        return float(task.verifier_metadata["city"] == "Paris")
