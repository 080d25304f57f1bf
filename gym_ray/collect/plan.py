"""Turn tasks into complete groups: one `group_id` per task, `num_repeats` rollouts sharing its first prompt."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from gym_ray.types import Task

_NAMESPACE = uuid.UUID("6c1f0d52-3f5e-4b8e-9a57-6b0c2a1e7d11")


class GroupSpec(BaseModel):
    """One unit of work sent to an agent actor: a task and how many rollouts its group holds."""

    group_id: str
    task: Task
    group_size: int
    attempt: int = 0  # tries already spent on this group by agent actors that died
    @property
    def key(self) -> tuple[str, str]:
        return (self.task.env, self.task.task_id)

    def rollout_id(self, rollout_index: int) -> str:
        return f"{self.group_id}-{rollout_index}"


def group_id_for(run_id: str, env: str, task_id: str) -> str:
    """Stable across a resume of the same run (same `run_id`), distinct across runs reusing tasks."""
    return uuid.uuid5(_NAMESPACE, f"{run_id}\x00{env}\x00{task_id}").hex


def plan_groups(tasks: list[Task], num_repeats: int, run_id: str) -> list[GroupSpec]:
    """Groups in task order; duplicate (env, task_id) pairs are refused because resume keys on them."""
    seen: set[tuple[str, str]] = set()
    groups = []
    for t in tasks:
        key = (t.env, t.task_id)
        if key in seen:
            raise ValueError(f"task_id {t.task_id!r} of env {t.env!r} appears twice; task ids must be unique")
        seen.add(key)
        groups.append(GroupSpec(group_id=group_id_for(run_id, t.env, t.task_id), task=t, group_size=num_repeats))
    return groups
