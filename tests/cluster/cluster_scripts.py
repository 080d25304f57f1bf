"""Scripted policies for the cluster tests (imported by module name in every Ray worker: the cluster's
PYTHONPATH holds this folder). `reply` solves `weather` (every good rollout scores 1.0); `slow_reply`
does the same after 0.4 s, so a run is still going when a test stops its job or kills a node."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

SLOW_S = 0.4
_CITY = re.compile(r"weather like in ([^?]+)\?")
_RESULT = re.compile(r"The weather in ([^<]+?) is (\w+), (-?\d+) °C\.")
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul", "Sydney"]
SYSTEM = ("You are a helpful assistant. Use the get_weather tool, then answer in one sentence with the "
          "condition and the temperature.")


def reply(prompt_text: str, turn: int):
    if turn == 0:
        cities = _CITY.findall(prompt_text)
        return {"name": "get_weather", "arguments": {"city": cities[-1] if cities else "Paris"}}
    found = _RESULT.findall(prompt_text)
    if not found:
        return "I could not get the weather."
    city, condition, temp = found[-1]
    return f"It is {condition}, {temp} °C in {city}."


async def slow_reply(prompt_text: str, turn: int):
    await asyncio.sleep(SLOW_S)
    return reply(prompt_text, turn)


def write_run_config(root: Path, name: str, num_tasks: int, *, script: str = "cluster_scripts:reply",
                     num_agents: int = 2, concurrency: int = 8, repeats: int = 4, output_dir: str | None = None,
                     rows_per_file: int = 8, hosting: str = "local", num_replicas: int = 1) -> Path:
    """A weather run config + its task file under `root`; policy and env hosted in the agent actors
    (`hosting: local`, so where the agent actors run is where the episodes run), or on Serve."""
    tasks = root / f"{name}.jsonl"
    tasks.write_text("".join(json.dumps({
        "task_id": f"w{i}", "env": "weather",
        "prompt": [{"role": "system", "content": SYSTEM},
                   {"role": "user", "content": f"What's the weather like in {CITIES[i % len(CITIES)]}?"}],
        "verifier_metadata": {"city": CITIES[i % len(CITIES)]}}) + "\n" for i in range(num_tasks)))
    cfg = {
        "model": {"kind": "scripted", "name": "policy", "script": script, "chat_template": "chatml_tools",
                  "hosting": hosting},
        "envs": {"weather": {"server": "gym_ray_env_weather.server:Weather", "hosting": hosting,
                             "num_replicas": num_replicas, "data": [str(tasks)], "agent": {"max_turns": 4}}},
        "collect": {"output_dir": output_dir or str(root / name), "num_repeats": repeats,
                    "concurrency": concurrency, "num_agents": num_agents, "rows_per_file": rows_per_file,
                    "roll_seconds": 1.0, "episode_timeout_s": 120, "sampling": {"max_tokens": 64}},
    }
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path
