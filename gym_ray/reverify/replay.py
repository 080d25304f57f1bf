"""Replay: an episode's recorded tool calls, made again against a fresh session of its environment with the
model's recorded outputs (no policy), each result compared with the record. Where every result matches, the
fresh session is in the state the episode left (so `reverify` may score it); where one differs, the
environment is not deterministic there, and the report names the call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from gym_ray.resources.records import NOT_OFFERED, digest, shown, tool_record
from gym_ray.resources.runtime import EnvRuntime, cap_output
from gym_ray.reverify.stored import (
    env_runtime,
    recorded_calls,
    run_config,
    stored_messages,
    stored_task,
    unrecorded,
)
from gym_ray.rundir import RunDir, RunInputError, read_run
from gym_ray.types import Task, ToolCall

_COLUMNS = ["rollout_id", "env", "segment_index", "num_segments", "status", "num_tool_calls", "task_json",
            "messages_json", "tool_calls_json"]


@dataclass(frozen=True)
class Divergence:
    """One call whose result differs from the record: its index among the episode's calls and its tool."""

    index: int
    tool: str
    recorded: str
    replayed: str

    def line(self) -> str:
        return f"call {self.index} {self.tool}: recorded {_short(self.recorded)}, replayed {_short(self.replayed)}"


@dataclass
class Replay:
    rollout_id: str
    calls: int = 0
    divergences: list[Divergence] = field(default_factory=list)


async def replay_calls(runtime: EnvRuntime, session_id: str, pairs: list[tuple[dict, ToolCall]],
                       cap: int) -> tuple[int, list[Divergence]]:
    """Make each recorded call again in `session_id` (seeded by the caller); (calls made, divergences). A
    result is compared as the model saw it: cut to the agent's `max_tool_output_chars` (`cap`)."""
    made, divergences = 0, []
    for i, (record, call) in enumerate(pairs):
        if record.get("status") == NOT_OFFERED:  # the agent answered it; the environment never saw it
            continue
        made += 1
        try:
            out = cap_output(str(await runtime.call_tool_raw(session_id, call.name, call.arguments)), cap)[0]
        except Exception as e:  # noqa: BLE001 - an environment that fails now diverges from one that answered
            divergences.append(Divergence(i, call.name, shown(record), f"<the environment failed: "
                                                                       f"{type(e).__name__}: {e}>"))
            continue
        if digest(out) != record.get("sha256"):
            divergences.append(Divergence(i, call.name, shown(record),
                                          shown(tool_record(call.id, call.name, call.arguments, out))))
    return made, divergences


async def replay_episode(runtime: EnvRuntime, task: Task, row: dict, cap: int, session_id: str,
                         close: bool = True) -> tuple[int, list[Divergence]]:
    """Seed `session_id` with the episode's task and replay its calls into it; closed after unless `close`
    is false (the caller verifies it first)."""
    pairs = recorded_calls(row, stored_messages(row))
    await runtime.seed_session(session_id, task)
    try:
        return await replay_calls(runtime, session_id, pairs, cap)
    finally:
        if close:
            await runtime.close_session(session_id)


def replay_rollout(run_dir: str | Path, rollout_id: str, config: str | Path | None = None) -> Replay:
    """`gym-ray replay`: the episode `rollout_id` of the run, replayed in this process."""
    run = RunDir.of(run_dir)
    table = read_run(run, _COLUMNS)
    found = table.filter(pc.equal(table["rollout_id"], rollout_id)).to_pylist()
    if not found:
        raise RunInputError(f"{run}: no rollout {rollout_id!r}")
    row = max(found, key=lambda r: r["segment_index"])  # every segment holds the whole chat; the last, its end
    if why := unrecorded(row):
        raise RunInputError(f"{run}: rollout {rollout_id}: cannot replay: {why}")
    cfg, source = run_config(run, config)
    runtime = env_runtime(cfg, row["env"], source)
    cap = cfg.envs[row["env"]].agent.max_tool_output_chars
    made, divergences = asyncio.run(replay_episode(runtime, stored_task(row), row, cap, f"replay-{rollout_id}"))
    return Replay(rollout_id, made, divergences)


def format_replay(r: Replay) -> str:
    if not r.divergences:
        return f"rollout {r.rollout_id}: {r.calls} tool calls replayed, every result as recorded"
    lines = [f"rollout {r.rollout_id}: {len(r.divergences)} of {r.calls} tool calls diverged"]
    return "\n".join([*lines, *(f"  {d.line()}" for d in r.divergences)])


def _short(text: str, n: int = 120) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")
