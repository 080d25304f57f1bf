"""What an agent actor is built from: its policy (a client, or the config of a hosted model) and the
environments the episode service reaches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gym_ray.clients import PolicyClient
from gym_ray.config import ModelConfig, SamplingConfig, TreeConfig
from gym_ray.episodes import EnvSpec


@dataclass
class WorkerSetup:
    """Everything an agent actor builds its clients from, once, at start."""

    policy: PolicyClient | ModelConfig
    envs: dict[str, EnvSpec]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    policy_app: str | None = None
    chat_template: str | None = None
    agent_classes: dict[str, Any] = field(default_factory=dict)  # env -> class (overrides config.agent.cls)
    episode_timeout_s: float = 300.0
    max_retries: int = 2
    concurrency: int = 32
    flush_interval_s: float = 0.05
    flush_groups: int = 64
    tree: TreeConfig | None = None  # each rollout of a group is a tree (collect.tree)


def build_policy(setup: WorkerSetup) -> PolicyClient:
    if not isinstance(setup.policy, ModelConfig):
        return setup.policy
    from gym_ray.models import make_policy_client

    return make_policy_client(setup.policy, setup.policy_app or setup.policy.name)

