"""Run directories for the report, check and compare tests: the real weather environment, the real
ToolCallingAgent and the scripted policy, in-process (no Ray), written with the real sink and layout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import re
from pathlib import Path

from gym_ray.agents.base import EpisodeContext, load_tokenizer
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.collect.api import _open_run, _write_meta
from gym_ray.collect.identity import run_identity
from gym_ray.collect.metrics import metrics_from_dir, write_metrics
from gym_ray.collect.plan import plan_groups
from gym_ray.collect.sink import ParquetSink
from gym_ray.config import load_config
from gym_ray.models.names import tokenizer_path_for
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.resources.client import make_env_client
from gym_ray.rundir import RunDir
from gym_ray.rundir.location import CONFIG
from gym_ray.tasks import load_tasks
from gym_ray.types import Rollout, rollouts_to_arrow

ROOT = Path(__file__).resolve().parents[2]
WEATHER = ROOT / "environments" / "weather"
COUNTER = ROOT / "environments" / "counter"
_RESULT = re.compile(r"The weather in (.+?) is (\w+), (-?\d+) °C\.")


def perfect(prompt_text: str, turn: int):
    """Turn 0: call get_weather for the city asked about; then answer from the tool's result."""
    if turn == 0:
        question = prompt_text.rsplit("<|im_start|>user\n", 1)[1]
        city = re.search(r"(?:in|for) ([A-Z][a-z]+(?: [A-Z][a-z]+)*)", question).group(1)
        return {"name": "get_weather", "arguments": {"city": city}}
    city, condition, temp = _RESULT.findall(prompt_text)[-1]
    return f"In {city} it is {condition}, {temp} °C."


_calls = itertools.count()


def mixed(prompt_text: str, turn: int):
    """Every other episode plays `perfect`, the others give up at once: groups with a learning signal."""
    if turn == 0 and next(_calls) % 2:
        return "I don't know."
    return perfect(prompt_text, turn)


def clueless(prompt_text: str, turn: int):
    return "I don't know."


def silent(prompt_text: str, turn: int):
    return ""


def garbled(prompt_text: str, turn: int):
    """A tool call the hermes parser cannot read, then a plain answer."""
    return '<tool_call>{"name": "get_weather", "arguments": {city: Paris}</tool_call>' if turn == 0 else "Sunny."


def rambling(prompt_text: str, turn: int):
    return "Let me think about the weather. " * 40


def broken(prompt_text: str, turn: int):
    raise RuntimeError("the policy process died")


_branch_calls = itertools.count()


def branching(prompt_text: str, turn: int):
    """Counter: three increments of 1-3 (each call its own amount, so a tree's branches diverge), then the
    value; "Nothing to do." at once when the task says "Stop at once" (a tree that ends before branching)."""
    if "Stop at once" in prompt_text:
        return "Nothing to do."
    if turn < 3:
        return {"name": "increment", "arguments": {"count": next(_branch_calls) % 3 + 1}}
    value = re.findall(r"The counter is now (-?\d+)\.", prompt_text)[-1]
    return f"The counter is {value}."


class _InProcess:
    """The scripted policy as a PolicyClient without Serve."""

    def __init__(self, policy: ScriptedPolicy):
        self.policy = policy
        self.model_name = policy.model_name

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        return await self.policy.generate(list(prompt_token_ids), sampling)


def run_apart(coro):
    """asyncio.run in a thread of its own: a session fixture may be built while playwright's sync API keeps an
    event loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def collect(out: Path, script: str, num_repeats: int = 4, limit: int | None = None,
            template: str = "chatml_tools", overrides: tuple[str, ...] = ()) -> list[Rollout]:
    """Play every weather task `num_repeats` times with `script` ('report_runs:perfect'); write the run."""
    cfg = load_config(WEATHER / "config.yaml", [f"collect.num_repeats={num_repeats}", f"collect.output_dir={out}",
                                                "model.kind=scripted", f"model.script={script}",
                                                f"model.chat_template={template}", *overrides])
    env_cfg = cfg.envs["weather"]
    tasks = load_tasks(env_cfg.data, default_env="weather", limit=limit)
    run_id, _ = _open_run(out, False, run_identity(cfg, tasks))
    _write_meta(RunDir.of(out), CONFIG, json.loads(cfg.model_dump_json()))
    policy = _InProcess(ScriptedPolicy(cfg.model, tokenizer_path_for(cfg.model)))
    tokenizer = load_tokenizer(tokenizer_path_for(cfg.model), template)
    env = make_env_client("weather", env_cfg)
    agent = ToolCallingAgent(env_cfg.agent)

    async def episode(group, task, index):
        ctx = EpisodeContext(policy=policy, env=env, tokenizer=tokenizer, sampling=cfg.collect.sampling,
                             config=env_cfg.agent, rollout_id=f"{group.group_id}-{index}", group_id=group.group_id,
                             rollout_index=index, group_size=num_repeats, session_id=f"{group.group_id}-{index}")
        return await agent.run(task, ctx)

    async def main():
        groups = plan_groups(tasks, num_repeats, run_id)
        return await asyncio.gather(*(episode(g, g.task, i) for g in groups for i in range(num_repeats)))

    rows = [r for rs in run_apart(main()) for r in rs]
    write_rows(out, rows)
    return rows


def tree_run(out: Path, width: int = 2, depth: int = 2, limit: int = 2) -> list[Rollout]:
    """The counter env played as trees (`collect.tree`, branching at every assistant turn) by `branching`:
    `limit` tasks of one tree each, and one task that stops before its first branch point (one early leaf)."""
    from gym_ray.episodes import EnvSpec, EpisodeService, Group
    from gym_ray.resources.local import LocalEnvClient

    cfg = load_config(COUNTER / "config.yaml", [
        f"collect.num_repeats={width ** depth}", f"collect.output_dir={out}", "model.kind=scripted",
        "model.script=report_runs:branching", "model.chat_template=chatml_tools",
        f"collect.tree={{width: {width}, depth: {depth}, at: assistant_turn}}"])
    env_cfg = cfg.envs["counter"].model_copy(update={"hosting": "local"})
    tasks = load_tasks(env_cfg.data, default_env="counter", limit=limit)
    last = tasks[-1].prompt[-1].model_copy(update={"content": "Stop at once."})
    tasks.append(tasks[-1].model_copy(update={"task_id": "counter-stop", "prompt": [*tasks[-1].prompt[:-1], last]}))
    run_id, _ = _open_run(out, False, run_identity(cfg, tasks))
    _write_meta(RunDir.of(out), CONFIG, json.loads(cfg.model_dump_json()))
    policy = _InProcess(ScriptedPolicy(cfg.model, tokenizer_path_for(cfg.model)))
    service = EpisodeService({"counter": EnvSpec(config=env_cfg, client=LocalEnvClient("counter", env_cfg))}, policy,
                             tokenizer=load_tokenizer(tokenizer_path_for(cfg.model), "chatml_tools"),
                             sampling=cfg.collect.sampling, tree=cfg.collect.tree)

    async def main():
        groups = plan_groups(tasks, width ** depth, run_id)
        return await asyncio.gather(*(service.run_group(g.task, Group(g.group_id, group_size=width ** depth))
                                      for g in groups))

    rows = [r for rs in run_apart(main()) for r in rs]
    write_rows(out, rows)
    return rows


def write_rows(out: Path, rows: list[Rollout], check: bool = True) -> None:
    """Rows into part files the way the sink writes them; `check=False` keeps rows that break the contract."""
    sink = ParquetSink(out, rows_per_file=10_000)
    if check:
        sink.write(rollouts_to_arrow(rows))
    else:
        import pyarrow as pa

        from gym_ray.types import ROLLOUT_SCHEMA

        def plain(v):  # enums by value, nested models (the cost struct) as dicts
            return v.value if hasattr(v, "value") else v.model_dump() if hasattr(v, "model_dump") else v

        cols = {n: [plain(getattr(r, n)) for r in rows] for n in ROLLOUT_SCHEMA.names}
        sink.write(pa.Table.from_pydict(cols, schema=ROLLOUT_SCHEMA))
    sink.close()
    write_metrics(metrics_from_dir(out), out)
