"""What re-verification and replay read back from a run: its config, each environment's runtime (in this
process, no Serve, no policy), the chat and task of a stored episode and its recorded tool calls."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from gym_ray.config import RunConfig, load_config, validate_config
from gym_ray.resources.records import NOT_OFFERED, arguments_digest
from gym_ray.resources.runtime import EnvRuntime, import_server
from gym_ray.rundir import RunDir, RunInputError
from gym_ray.rundir.location import CONFIG
from gym_ray.types import Message, Task, ToolCall


def run_config(run: RunDir, config: str | Path | None) -> tuple[RunConfig, str]:
    """The config to verify with and where it came from: `config` (a run YAML), else the run's own saved one."""
    if config is not None:
        return load_config(config), f"--config {config}"
    path = run.meta(CONFIG)
    if not run.is_file(path):
        raise RunInputError(f"{path}: missing (a run from before configs were saved): give --config RUN.yaml")
    try:
        data = json.loads(run.read_bytes(path))
    except ValueError as e:
        raise RunInputError(f"{path}: not JSON ({e})") from None
    return validate_config(data, str(path)), str(path)


def env_runtime(cfg: RunConfig, env: str, source: str) -> EnvRuntime:
    """`env`'s server built in this process from `cfg`; one line naming `source` when it cannot be."""
    if env not in cfg.envs:
        raise RunInputError(f"{source}: no env {env!r}, which the run's rows are of (envs there: {sorted(cfg.envs)})")
    try:
        return EnvRuntime.from_config(env, cfg.envs[env])
    except ValueError as e:
        raise RunInputError(f"{source}: envs.{env}: {e}") from None


def verifier_identity(cfg: RunConfig, env: str) -> str:
    """Which verifier scores `env`: its server class, the version of the package that ships it, and a digest
    of the env's `config:` block (its constructor's settings)."""
    env_cfg = cfg.envs[env]
    module = env_cfg.server.partition(":")[0]
    top = module.split(".")[0]
    dist = _distribution(top)
    version = f"{dist}=={importlib.metadata.version(dist)}" if dist else f"{top} (not installed)"
    settings = json.dumps(env_cfg.config, sort_keys=True, default=str)
    import_server(env_cfg.server)  # a server that does not import is named here, not as a wrong identity
    return f"{env_cfg.server} {version} config:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


@functools.cache
def _distribution(top: str) -> str | None:
    """The installed distribution that ships the top-level module `top`: the one of its name, else (for a
    module under site-packages) a scan of every installed package's metadata, which takes seconds."""
    try:
        return importlib.metadata.distribution(top).metadata["Name"]
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(top)
    origin = (spec.origin or "") if spec else ""
    if "site-packages" not in origin and "dist-packages" not in origin:
        return None
    return next(iter(importlib.metadata.packages_distributions().get(top) or []), None)


def stored_task(row: dict[str, Any]) -> Task:
    try:
        return Task.model_validate_json(row["task_json"])
    except ValueError as e:
        raise RunInputError(f"rollout {row['rollout_id']}: task_json is not a task ({str(e).splitlines()[0]})") from None


def stored_messages(row: dict[str, Any]) -> list[Message]:
    """The episode's chat as `messages_json` holds it (OpenAI shape, tool arguments as JSON text)."""
    out = []
    for m in json.loads(row["messages_json"] or "[]"):
        calls = [ToolCall(id=c["id"], name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"]))
                 for c in m.get("tool_calls") or []]
        out.append(Message(role=m["role"], content=m.get("content") or "", tool_calls=calls or None,
                           tool_call_id=m.get("tool_call_id"), name=m.get("name")))
    return out


def recorded_calls(row: dict[str, Any], messages: list[Message]) -> list[tuple[dict, ToolCall]]:
    """The row's tool records, each with the call the model made, in order. A record that does not match
    its call (another id, other arguments) is a broken row, not something to replay."""
    records = json.loads(row["tool_calls_json"] or "[]")
    calls = [c for m in messages if m.role == "assistant" for c in m.tool_calls or []]
    pairs = list(zip(records, calls, strict=False))
    for i, (record, call) in enumerate(pairs):
        if (record.get("id"), record.get("name")) != (call.id, call.name) or \
                record.get("args_sha256") != arguments_digest(call.arguments):
            raise RunInputError(f"rollout {row['rollout_id']}: tool record {i} ({record.get('name')}) does not "
                                f"match the episode's call {i} ({call.name})")
    if len(pairs) < len(records):
        raise RunInputError(f"rollout {row['rollout_id']}: {len(records)} tool records for {len(calls)} calls")
    return pairs


def unrecorded(row: dict[str, Any]) -> str:
    """Why the row's tool calls cannot be replayed exactly ("" when they can): calls made without records."""
    records = json.loads(row["tool_calls_json"] or "[]")
    sent = sum(1 for r in records if r.get("status") != NOT_OFFERED)
    if sent != row["num_tool_calls"]:
        return (f"{row['num_tool_calls']} tool calls, {sent} recorded (an agent or a run that does not record "
                "tool results)")
    return ""
