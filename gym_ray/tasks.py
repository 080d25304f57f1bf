"""Task loading from JSONL and Parquet, in our row shape or NeMo Gym's (`responses_create_params`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import ValidationError

from gym_ray.types import Message, Task, ToolSpec


class TaskLoadError(ValueError):
    """A bad task row; the message names the file and the line (JSONL) or row index (Parquet)."""


_NEMO_RESERVED = {"responses_create_params", "agent_ref", "verifier_metadata", "skills_ref"}


def _content_text(content: Any) -> str:
    """Responses-API content may be a list of parts (`input_text`, `output_text`); we keep the text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    raise ValueError(f"unsupported message content {type(content).__name__}")


def from_nemo_gym(row: dict, default_env: str | None, default_id: str) -> Task:
    """Import a NeMo Gym task row: input + tools from `responses_create_params`, the rest to the verifier."""
    params = row["responses_create_params"]
    raw_input = params.get("input")
    if isinstance(raw_input, str):
        prompt = [Message(role="user", content=raw_input)]
    elif isinstance(raw_input, list):
        prompt = [
            Message(role=m.get("role", "user"), content=_content_text(m.get("content")))
            for m in raw_input
            if m.get("type", "message") == "message"
        ]
    else:
        raise ValueError("responses_create_params.input must be a string or a list of messages")
    if params.get("instructions"):
        prompt.insert(0, Message(role="system", content=params["instructions"]))
    tools = [ToolSpec.from_openai(t) for t in params.get("tools") or [] if t.get("type", "function") == "function"]
    meta = {k: v for k, v in row.items() if k not in _NEMO_RESERVED and not k.startswith("_ng_")}
    meta.update(row.get("verifier_metadata") or {})
    env = (row.get("agent_ref") or {}).get("name") or default_env
    if not env:
        raise ValueError("no environment: the row has no agent_ref.name and none was given")
    task_id = str(row.get("task_id") or row.get("id") or row.get("uuid") or row.get("_ng_task_index", default_id))
    return Task(task_id=task_id, env=env, prompt=prompt, tools=tools or None, verifier_metadata=meta)


def parse_row(row: dict, default_env: str | None, default_id: str) -> Task:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "responses_create_params" in row:
        return from_nemo_gym(row, default_env, default_id)
    row = dict(row)
    row.setdefault("task_id", default_id)
    if default_env:
        row.setdefault("env", default_env)
    if isinstance(row.get("prompt"), str):
        row["prompt"] = [{"role": "user", "content": row["prompt"]}]
    return Task.model_validate(row)


def _explain(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'row'}: {err['msg']}" for err in e.errors())
    if isinstance(e, KeyError):
        return f"missing field {e}"
    return str(e)


def iter_tasks(path: str | Path, default_env: str | None = None) -> Iterator[Task]:
    """Yield tasks from a `.jsonl` or `.parquet` file; ids default to `<file stem>-<index>`."""
    path = Path(path)
    if not path.is_file():
        raise TaskLoadError(f"{path}: task file not found")
    if path.suffix == ".parquet":
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            try:
                yield parse_row(row, default_env, f"{path.stem}-{i}")
            except (ValueError, KeyError, TypeError) as e:
                raise TaskLoadError(f"{path}: row {i}: {_explain(e)}") from None
        return
    if path.suffix not in (".jsonl", ".json"):
        raise TaskLoadError(f"{path}: unsupported task file type (use .jsonl or .parquet)")
    with path.open() as f:
        index = 0
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield parse_row(json.loads(line), default_env, f"{path.stem}-{index}")
            except (ValueError, KeyError, TypeError) as e:
                raise TaskLoadError(f"{path}: line {lineno}: {_explain(e)}") from None
            index += 1


def load_tasks(paths: list[str | Path], default_env: str | None = None, limit: int | None = None) -> list[Task]:
    """Load tasks from several files; duplicate task ids across them are an error (resume keys on them)."""
    tasks: list[Task] = []
    seen: dict[str, Path] = {}
    for p in paths:
        for t in iter_tasks(p, default_env):
            key = f"{t.env}/{t.task_id}"
            if key in seen:
                raise TaskLoadError(f"{p}: task_id {t.task_id!r} of env {t.env!r} already defined in {seen[key]}")
            seen[key] = Path(p)
            tasks.append(t)
            if limit is not None and len(tasks) >= limit:
                return tasks
    return tasks
