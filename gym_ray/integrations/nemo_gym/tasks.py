"""gym_ray tasks as NeMo Gym task rows (`gym-ray export nemo-gym`); `gym_ray.tasks` reads them back.

A row is what NeMo Gym's collector reads and its simple_agent POSTs to the resources server:
`responses_create_params` (the prompt as Responses-API `input`, the tools the model is offered), an
`agent_ref` naming the NeMo Gym agent that plays it, and gym_ray's `task_id`, `env` and
`verifier_metadata`, so gym_ray's verifier scores the row exactly as it scores the task.
"""

from __future__ import annotations

import json
from pathlib import Path

from gym_ray.integrations.export import ExportError, shipped_env_configs
from gym_ray.integrations.nemo_gym.responses import RowShapeError, create_params
from gym_ray.tasks import load_tasks
from gym_ray.types import Task, ToolSpec


def env_tools(envs: dict) -> dict[str, list[ToolSpec]]:
    """Each env's tools, read from its server class (`envs`: name -> EnvConfig or config.yaml path)."""
    from gym_ray.config import load_config
    from gym_ray.resources.runtime import import_server

    out = {}
    for name, cfg in envs.items():
        if isinstance(cfg, Path):
            cfg = load_config(cfg).envs[name]
        out[name] = [td.spec for td in import_server(cfg.server).tool_defs.values()]
    return out


def nemo_gym_row(task: Task, tools: list[ToolSpec], agent_name: str) -> dict:
    try:
        params = create_params(task, tools)
    except RowShapeError as e:
        raise ExportError(str(e)) from None
    return {"responses_create_params": params,
            "agent_ref": {"type": "responses_api_agents", "name": agent_name},
            "task_id": task.task_id, "env": task.env, "verifier_metadata": task.verifier_metadata}


def export_nemo_gym(task_files: list[str | Path], out: str | Path, *, config: str | Path | None = None,
                    agent_name: str | None = None) -> int:
    """Write the tasks of `task_files` as one NeMo Gym JSONL. The tools come from each env's server
    (`config`'s envs, else gym_ray's shipped ones); `agent_ref.name` is `agent_name`, else
    `<env>_simple_agent` (the agents `gym-ray serve --nemo-gym-port` writes into its NeMo Gym config)."""
    from gym_ray.config import load_config

    out = Path(out)
    if out.suffix != ".jsonl":
        raise ExportError(f"{out}: the output must be a .jsonl file (NeMo Gym's input_jsonl_fpath)")
    envs = load_config(config).envs if config else shipped_env_configs()
    tasks = load_tasks(list(task_files), envs=envs)
    if not tasks:
        raise ExportError(f"no tasks in {', '.join(map(str, task_files))}")
    tools = env_tools({name: envs[name] for name in {t.env for t in tasks}})
    rows = [nemo_gym_row(t, tools[t.env], agent_name or f"{t.env}_simple_agent") for t in tasks]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)
