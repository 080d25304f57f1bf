"""The agent's side of an episode's cost: its coroutine's CPU by stage, and the tries it took.

The service runs each try under `Spent.meter` (two thread-clock reads per step of the coroutine and one per
change of stage) and folds the result into the rows' `cost` with `charge`.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

from gym_ray.agents.base import EpisodeContext
from gym_ray.errors import FailureStage
from gym_ray.meter import Metered
from gym_ray.types import Rollout

# the episode's stage -> the cost field its agent-side CPU belongs to (the rest is the agent's own)
_CPU_FIELD = {FailureStage.GENERATE: "policy_cpu_s", FailureStage.TOOL: "tool_cpu_s",
              FailureStage.VERIFICATION: "verify_cpu_s", FailureStage.SEED: "env_cpu_s",
              FailureStage.CLEANUP: "env_cpu_s"}


class Spent:
    """What the tries of one rollout spent on the agent's side."""

    def __init__(self) -> None:
        self.cpu: dict[FailureStage, float] = {}
        self.retries = 0
        self.retry_wall_s = 0.0
        self._t0 = time.perf_counter()
        self._try_t0 = self._t0

    def meter(self, coro: Coroutine[Any, Any, Any], ctx: EpisodeContext) -> Metered:
        """`coro` (one try), its CPU charged to the stage the episode is in (`Episode.at` switches). A re-run's rows carry only their own
        try's CPU; the earlier tries and their back-off are `retry_wall_s`."""
        self.cpu = {}
        self._try_t0 = time.perf_counter()
        self.retry_wall_s = self._try_t0 - self._t0 if self.retries else 0.0
        return Metered(coro, self.cpu, ctx.stage)

    def retried(self) -> None:
        self.retries += 1

    def charge(self, rows: list[Rollout]) -> list[Rollout]:
        """Add the agent-side CPU and the retries to `rows`' cost (one episode: the same on every segment)."""
        if not rows:
            return rows
        base = rows[-1].cost
        update: dict[str, Any] = {"retries": self.retries, "retry_wall_s": self.retry_wall_s}
        for stage, seconds in self.cpu.items():
            field = _CPU_FIELD.get(stage, "agent_cpu_s")
            update[field] = update.get(field, getattr(base, field)) + seconds
        update["cpu_s"] = base.cpu_s + sum(self.cpu.values())
        if not base.wall_s:  # a row the service wrote (timeout, lost env): the try's wall from here
            update["wall_s"] = time.perf_counter() - self._try_t0
        cost = base.model_copy(update=update)
        for r in rows:
            r.cost = cost
        return rows
