"""Task loading from JSONL and Parquet, in our row shape or NeMo Gym's (`responses_create_params`), and the
bounded copy of a task that a failure row stores."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import ValidationError

from gym_ray.types import Message, Task, ToolSpec

# A failure row keeps at most this many characters of each string of its task: one oversized task (a 50 MB
# prompt) must not cost its size again in every row and every copy of the row.
FAILED_ROW_KEEP_CHARS = 4096
CUT_NOTE = "[gym_ray: cut to {kept} of {total} characters]"


class TaskLoadError(ValueError):
    """A bad task row; the message names the file and the line (JSONL) or row index (Parquet)."""


# `task_id` / `env` are gym_ray's identity in a row it exported (gym_ray.integrations.nemo_gym.tasks).
_NEMO_RESERVED = {"responses_create_params", "agent_ref", "verifier_metadata", "skills_ref", "task_id", "env"}


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
    env = row.get("env") or (row.get("agent_ref") or {}).get("name") or default_env
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


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise TaskLoadError(f"{path}: not a readable Parquet file: {_one_line(e)}") from None
    for i, row in enumerate(rows):
        yield f"row {i}", row


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """Decoded line by line, so a byte that is not UTF-8 is reported with its line; a BOM is accepted."""
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"line {lineno}"
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise TaskLoadError(f"{path}: {where}: not UTF-8 text ({e.reason}: byte "
                                        f"{e.object[e.start]:#04x}); save the file as UTF-8") from None
                if line.strip():
                    try:
                        yield where, json.loads(line)
                    except ValueError as e:
                        raise TaskLoadError(f"{path}: {where}: {e}") from None
    except OSError as e:
        raise TaskLoadError(f"{path}: cannot read the task file: {e.strerror or e}") from None


def _one_line(e: Exception) -> str:
    return " ".join(part.strip() for part in str(e).splitlines() if part.strip())


def _located(path: str | Path, default_env: str | None = None,
             envs: Collection[str] | None = None) -> Iterator[tuple[str, Task]]:
    """(where, task) from a `.jsonl` or `.parquet` file, `where` being "line N" or "row N"; ids default to
    `<file stem>-<index>`. With `envs`, a row naming another environment is refused where it stands."""
    path = Path(path)
    if not path.is_file():
        raise TaskLoadError(f"{path}: task file not found")
    if path.suffix == ".parquet":
        rows = _parquet_rows(path)
    elif path.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    else:
        raise TaskLoadError(f"{path}: unsupported task file type (use .jsonl or .parquet)")
    index = 0
    for where, row in rows:
        try:
            task = parse_row(row, default_env, f"{path.stem}-{index}")
        except (ValueError, KeyError, TypeError) as e:
            raise TaskLoadError(f"{path}: {where}: {_explain(e)}") from None
        if envs is not None and task.env not in envs:
            raise TaskLoadError(f"{path}: {where}: env {task.env!r} is not defined in the config "
                                f"(envs: {', '.join(sorted(envs))})")
        yield where, task
        index += 1
    if index == 0:
        raise TaskLoadError(f"{path}: no task rows (the file is empty)")


def iter_tasks(path: str | Path, default_env: str | None = None) -> Iterator[Task]:
    """Tasks from a `.jsonl` or `.parquet` file (see `_located`)."""
    for _, task in _located(path, default_env):
        yield task


def load_tasks(paths: list[str | Path], default_env: str | None = None, limit: int | None = None, *,
               envs: Collection[str] | None = None, seen: dict[str, str] | None = None) -> list[Task]:
    """Load tasks from several files; a duplicate task id is an error naming both places (resume keys on
    ids). Pass one `seen` dict to several calls to keep ids unique across all of them."""
    tasks: list[Task] = []
    seen = {} if seen is None else seen
    for p in paths:
        for where, t in _located(p, default_env, envs):
            key = f"{t.env}/{t.task_id}"
            if key in seen:
                raise TaskLoadError(f"{p}: {where}: task_id {t.task_id!r} of env {t.env!r} already defined "
                                    f"at {seen[key]}")
            seen[key] = f"{p}: {where}"
            tasks.append(t)
            if limit is not None and len(tasks) >= limit:
                return tasks
    return tasks


def messages_json(messages: list[Message], keep: int | None = None) -> str:
    """Messages as the rows' `*_messages_json` hold them; with `keep`, every longer string cut (saying so)."""
    data = [m.to_openai() for m in messages]
    return json.dumps(data if keep is None else _cut(data, keep), ensure_ascii=False)


def failed_row_texts(task: Task, keep: int = FAILED_ROW_KEEP_CHARS) -> tuple[str, str, dict[str, Any]]:
    """(task_json, prompt_messages_json, record) for a failure row. A task whose strings all fit in `keep`
    characters is stored whole; otherwise each longer string is cut to `keep` (its note says its size) and
    `record` holds the prompt's size in characters and the sha256 of the whole `prompt_messages_json`,
    which identify the task without storing it."""
    dump = task.model_dump(mode="json")
    if _fits(dump, keep):
        return task.model_dump_json(), messages_json(task.prompt), {}
    record = {"prompt_chars": sum(len(m.content) for m in task.prompt),
              "prompt_sha256": hashlib.sha256(messages_json(task.prompt).encode()).hexdigest()}
    return json.dumps(_cut(dump, keep), ensure_ascii=False), messages_json(task.prompt, keep), record


def _cut(value: Any, keep: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= keep else value[:keep] + CUT_NOTE.format(kept=keep, total=len(value))
    if isinstance(value, dict):
        return {k: _cut(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, keep) for v in value]
    return value


def _fits(value: Any, keep: int) -> bool:
    if isinstance(value, str):
        return len(value) <= keep
    if isinstance(value, dict):
        return all(_fits(v, keep) for v in value.values())
    if isinstance(value, list):
        return all(_fits(v, keep) for v in value)
    return True
