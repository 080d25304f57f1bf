"""Task exporters: gym_ray task files as the dataset formats trainers read.

Every exporter keeps the whole task as JSON so the trainer-side adapter runs the very same task; the
trainer's own columns only carry what its loader needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gym_ray.config import load_config
from gym_ray.tasks import load_tasks
from gym_ray.types import Task

VERL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
    ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string()), ("task_id", pa.string()),
                              ("env", pa.string()), ("task_json", pa.string())])),
    ("agent_name", pa.string()),
])


class ExportError(ValueError):
    """Nothing to export or nowhere to write it; the message says which."""


def verl_rows(tasks: list[Task], agent_name: str = "gym_ray", split: str = "train") -> list[dict]:
    """VeRL RLHFDataset rows: `data_source` gym_ray/<env>, the prompt chat, `reward_model.ground_truth` the
    verifier metadata (JSON), `extra_info.task_json` the task for `GymRayAgentLoop`."""
    return [{
        "data_source": f"gym_ray/{t.env}",
        "prompt": [{"role": m.role, "content": m.content} for m in t.prompt],
        "ability": t.env,
        "reward_model": {"style": "rule", "ground_truth": json.dumps(t.verifier_metadata, ensure_ascii=False)},
        "extra_info": {"index": i, "split": split, "task_id": t.task_id, "env": t.env,
                       "task_json": t.model_dump_json(exclude_none=True)},
        "agent_name": agent_name,
    } for i, t in enumerate(tasks)]


def export_verl(task_files: list[str | Path], out: str | Path, *, agent_name: str = "gym_ray",
                split: str = "train") -> int:
    """Write the tasks of `task_files` (JSONL/Parquet, NeMo Gym rows too) as one VeRL Parquet file."""
    out = Path(out)
    if out.suffix != ".parquet":
        raise ExportError(f"{out}: the output must be a .parquet file (VeRL's data.train_files)")
    tasks = load_tasks(list(task_files))
    if not tasks:
        raise ExportError(f"no tasks in {', '.join(map(str, task_files))}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(verl_rows(tasks, agent_name, split), schema=VERL_SCHEMA), out)
    return len(tasks)


OPENRLHF_SCHEMA = pa.schema([
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("label", pa.string()),
    ("datasource", pa.string()),
    ("task_id", pa.string()),
    ("env", pa.string()),
])


def write_rows(rows: list[dict], schema: pa.Schema, out: Path) -> None:
    """`rows` as Parquet with `schema` (a `.parquet` path) or as JSON lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    else:
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def shipped_env_configs() -> dict[str, Path]:
    """The installed environment packages' own configs (`environments/<name>/config.yaml`): what the OpenRLHF
    executor plays when no GYM_RAY_CONFIG names a run config."""
    from gym_ray.environments import shipped_configs

    return shipped_configs()


def openrlhf_rows(tasks: list[Task]) -> list[dict]:
    """OpenRLHF prompt rows: `prompt` the chat (`--data.input_key prompt --data.apply_chat_template`),
    `label` the task JSON (`--data.label_key label`, what gym_ray's AgentExecutor plays), `datasource`."""
    return [{
        "prompt": [{"role": m.role, "content": m.content} for m in t.prompt],
        "label": t.model_dump_json(exclude_none=True),
        "datasource": f"gym_ray/{t.env}",
        "task_id": t.task_id,
        "env": t.env,
    } for t in tasks]


def export_openrlhf(task_files: list[str | Path], out: str | Path, *, config: str | Path | None = None) -> int:
    """Write the tasks of `task_files` as one OpenRLHF prompt dataset (`.parquet` or `.jsonl`).

    A row naming an env the executor could not play is refused here with its file and line: the envs of
    `config` (the run config given to the executor as GYM_RAY_CONFIG), else gym_ray's shipped ones.
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".jsonl"):
        raise ExportError(f"{out}: the output must be a .parquet or .jsonl file (OpenRLHF's data.prompt_dataset)")
    envs = load_config(config).envs if config else shipped_env_configs()
    tasks = load_tasks(list(task_files), envs=envs)
    if not tasks:
        raise ExportError(f"no tasks in {', '.join(map(str, task_files))}")
    rows = openrlhf_rows(tasks)
    write_rows(rows, OPENRLHF_SCHEMA, out)
    return len(rows)


TRL_TASK_KEY = "gym_ray_task"  # TRL hands rollout_func only the prompt: its first message carries the task
TRL_SCHEMA = pa.schema([
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string()), (TRL_TASK_KEY, pa.string())]))),
    ("task_id", pa.string()),
    ("env", pa.string()),
])


def trl_rows(tasks: list[Task]) -> list[dict]:
    """GRPOTrainer dataset rows: the chat `prompt`, its first message carrying the task JSON, `task_id`, `env`."""
    rows = []
    for t in tasks:
        prompt = [{"role": m.role, "content": m.content, TRL_TASK_KEY: None} for m in t.prompt]
        prompt[0][TRL_TASK_KEY] = t.model_dump_json(exclude_none=True)
        rows.append({"prompt": prompt, "task_id": t.task_id, "env": t.env})
    return rows


def export_trl(task_files: list[str | Path], out: str | Path) -> int:
    """Write the tasks of `task_files` as one TRL prompt dataset (`.parquet` or `.jsonl`) for
    `gym_ray.integrations.trl.GymRayRollouts`."""
    out = Path(out)
    if out.suffix not in (".parquet", ".jsonl"):
        raise ExportError(f"{out}: the output must be a .parquet or .jsonl file (load_dataset's data_files)")
    tasks = load_tasks(list(task_files))
    if not tasks:
        raise ExportError(f"no tasks in {', '.join(map(str, task_files))}")
    rows = trl_rows(tasks)
    write_rows(rows, TRL_SCHEMA, out)
    return len(rows)
