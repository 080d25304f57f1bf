"""Where collection meets the other parts: building policy/env clients and agents from config, and
telling infrastructure failures (retry) from everything else (a status row)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gym_ray.agents.choose import agent_class
from gym_ray.clients import EnvClient, PolicyClient
from gym_ray.config import EnvConfig, ModelConfig, SamplingConfig


@dataclass
class EnvSpec:
    """How an agent actor reaches one environment: a ready client, or its config (+ Serve app name)."""

    config: EnvConfig
    client: EnvClient | None = None
    app_name: str | None = None


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


def build_policy(setup: WorkerSetup) -> PolicyClient:
    if not isinstance(setup.policy, ModelConfig):
        return setup.policy
    from gym_ray.models import make_policy_client

    return make_policy_client(setup.policy, setup.policy_app or setup.policy.name)


def build_env(name: str, spec: EnvSpec) -> EnvClient:
    """A given client as is; else through the env's Serve app, or in-process when it has none."""
    if spec.client is not None:
        return spec.client
    from gym_ray.resources.client import make_env_client

    return make_env_client(name, spec.config, app_name=spec.app_name)


def build_agent(name: str, spec: EnvSpec, override: Any = None) -> Any:
    cls = override or agent_class(spec.config)
    return cls(spec.config.agent)


def load_tokenizer(policy: PolicyClient, chat_template: str | None) -> Any:
    """The run's one tokenizer + chat template (a `ChatTokenizer`), loaded once per actor."""
    from gym_ray.agents.base import load_tokenizer as load

    return load(policy.tokenizer_path(), chat_template)

