"""Real tree rollouts for the trainer tests: the counter env and the scripted policy, in-process, through
the episode service (no Ray, no vLLM)."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path

from gym_ray.agents.base import load_tokenizer
from gym_ray.config import ModelConfig, SamplingConfig, TreeConfig, load_config
from gym_ray.episodes import EnvSpec, EpisodeService, Group
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.resources.local import LocalEnvClient
from gym_ray.tasks import load_tasks
from gym_ray.types import Rollout, Task

COUNTER = Path(__file__).resolve().parent.parent / "environments" / "counter"
_calls = itertools.count()


def counting_script(prompt_text: str, turn: int):
    """Three increments of 1-3 (each call a different amount, so branches diverge), then the count; "Nothing to
    do." at once when the task says "Stop at once" (an episode that ends before branching)."""
    if "Stop at once" in prompt_text:
        return "Nothing to do."
    if turn < 3:
        return {"name": "increment", "arguments": {"count": next(_calls) % 3 + 1}}
    return f"The counter is {re.findall(r'The counter is now (-?[0-9]+)[.]', prompt_text)[-1]}."


class Policy:
    """The scripted policy as a PolicyClient (the tree's routing key is not needed here)."""

    def __init__(self, policy: ScriptedPolicy):
        self.policy, self.model_name = policy, policy.model_name

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        return await self.policy.generate(list(prompt_token_ids), sampling)


def counter_tasks() -> list[Task]:
    return load_tasks(load_config(COUNTER / "config.yaml").envs["counter"].data, default_env="counter")


def play_trees(model_path: str, tree: TreeConfig, tasks: list[Task], trees_per_task: int = 1) -> list[Rollout]:
    """Each task's group of `trees_per_task` trees, group after group, each in rollout order."""
    env_cfg = load_config(COUNTER / "config.yaml").envs["counter"].model_copy(update={"hosting": "local"})
    policy = Policy(ScriptedPolicy(ModelConfig(kind="scripted", name="scripted",
                                               script=f"{__name__}:counting_script"), model_path))
    service = EpisodeService({"counter": EnvSpec(config=env_cfg, client=LocalEnvClient("counter", env_cfg))},
                             policy, tokenizer=load_tokenizer(model_path, "chatml_tools"),
                             sampling=SamplingConfig(max_tokens=96), tree=tree)

    async def play() -> list[list[Rollout]]:
        return await asyncio.gather(*(service.run_group(t, Group(f"g{i}", group_size=trees_per_task * tree.leaves))
                                      for i, t in enumerate(tasks)))

    return [r for rows in asyncio.run(play()) for r in sorted(rows, key=lambda r: r.rollout_index)]
