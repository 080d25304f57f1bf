"""What a run is, as the manifest records it: the task set (a digest over every task's id and content), the
group size, and the parts of the config that shape the rows (policy, judges, sampling, each environment's
server, settings and agent). Where the run writes, how fast, and how it is hosted are left out: a resume
may change those, but not what the rows are, or one directory would hold two datasets.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gym_ray.config import ModelConfig, RunConfig
from gym_ray.redact import redact
from gym_ray.types import Task

# Fields that change what a model produces; the rest (replicas, hosting, transport, timeouts) change how.
_MODEL_FIELDS = {"kind", "model", "tokenizer", "chat_template", "engine_kwargs", "script", "replies"}
_ENV_FIELDS = {"server", "config", "agent"}
_SHOWN_CHARS = 60


def task_set(tasks: list[Task]) -> dict[str, Any]:
    """Count and sha256 over every task (id and content), independent of their order in the files."""
    h = hashlib.sha256()
    for t in sorted(tasks, key=lambda t: (t.env, t.task_id)):
        h.update(t.model_dump_json().encode())
        h.update(b"\x00")
    return {"count": len(tasks), "sha256": h.hexdigest()}


def run_identity(config: RunConfig, tasks: list[Task], policy: Any = None) -> dict[str, Any]:
    """The manifest's `identity`. `policy`: what the collector generates with when it is not `config.model`
    (a trainer's PolicyClient, which is known by its model name)."""
    if policy is None or isinstance(policy, ModelConfig):
        model = (policy or config.model).model_dump(include=_MODEL_FIELDS)
    else:
        model = {"client": type(policy).__name__, "model_name": getattr(policy, "model_name", "")}
    shape = {  # keyed as in the config file, so a difference names the key to fix
        "model": model,
        "models": {n: m.model_dump(include=_MODEL_FIELDS) for n, m in config.models.items()},
        "envs": {n: e.model_dump(include=_ENV_FIELDS) for n, e in config.envs.items()},
        "collect": config.collect.model_dump(include={"num_repeats", "sampling"}),
    }
    return {"tasks": task_set(tasks), **json.loads(redact(json.dumps(shape, sort_keys=True, default=str)))}


def difference(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between a run's recorded identity and this one, in words; None when they match."""
    old, new = recorded.get("tasks"), current["tasks"]
    if old != new:
        old = old or {}
        return (f"the tasks differ: the run has {old.get('count')} tasks (sha256 {str(old.get('sha256'))[:12]}), "
                f"these are {new['count']} (sha256 {new['sha256'][:12]})")
    a, b = _flat({k: v for k, v in recorded.items() if k != "tasks"}), _flat({k: v for k, v in current.items()
                                                                            if k != "tasks"})
    repeats = "collect.num_repeats"
    if a.get(repeats) != b[repeats]:
        return f"written with num_repeats={a.get(repeats)}, resumed with {b[repeats]}; groups would not be complete"
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k, _ABSENT) != b.get(k, _ABSENT))
    if not changed:
        return None
    first = changed[0]
    more = f" (and {len(changed) - 1} more: {', '.join(changed[1:4])}{', ...' if len(changed) > 4 else ''})" \
        if len(changed) > 1 else ""
    return f"the config differs at {first}: {_shown(a.get(first, _ABSENT))} -> {_shown(b.get(first, _ABSENT))}{more}"


_ABSENT = object()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted paths (`envs.weather.agent.max_turns`); lists and scalars are leaves, an
    empty mapping adds none (so a model added to `models` is named by its own keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, path + "."))
        else:
            out[path] = v
    return out


def _shown(v: Any) -> str:
    if v is _ABSENT:
        return "(not set)"
    text = json.dumps(v, default=str)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
