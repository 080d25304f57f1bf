"""The episode service's public API: built from a run config path + overrides + a policy, `run(task,
rollout_index, group)` -> rows with the episode's identity, and the failure contract (one masked row with a
status; infrastructure failures re-run with a fresh session, counted in `attempt`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gym_ray.agents.base import InfraError
from gym_ray.config import ModelConfig
from gym_ray.episodes import EpisodeService, Group
from gym_ray.models.client import make_policy_client
from gym_ray.tasks import load_tasks

WEATHER = Path(__file__).parents[1] / "environments" / "weather"
CONFIG = WEATHER / "config.yaml"
OVERRIDES = ["envs.weather.hosting=local", "model.chat_template=chatml_tools"]


@pytest.fixture(scope="module")
def policy():
    return make_policy_client(ModelConfig(kind="scripted", hosting="local", script="fault_helpers:weather_reply",
                                          chat_template="chatml_tools"), app_name="policy")


@pytest.fixture(scope="module")
def service(policy):
    return EpisodeService.from_config(CONFIG, OVERRIDES, policy=policy)


@pytest.fixture(scope="module")
def task():
    return load_tasks([WEATHER / "data" / "example.jsonl"], default_env="weather")[0]


class FlakyPolicy:
    """The scripted policy, whose first `failures` calls fail as the machinery would (a lost replica)."""

    def __init__(self, inner, failures: int):
        self.inner, self.failures, self.sessions = inner, failures, []
        self.model_name = inner.model_name

    def tokenizer_path(self) -> str:
        return self.inner.tokenizer_path()

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        self.sessions.append(session_id)
        if self.failures:
            self.failures -= 1
            raise InfraError("replica lost")
        return await self.inner.generate(prompt_token_ids, sampling, session_id)

    async def chat(self, messages, tools, sampling):
        raise NotImplementedError


def test_an_episode_of_a_group_scores_with_its_identity(service, task):
    rows = asyncio.run(service.run(task, 1, Group("g7", group_size=2)))
    [row] = rows
    assert (row.status, row.reward, row.mask_sample) == ("ok", 1.0, False)
    assert (row.rollout_id, row.group_id, row.rollout_index, row.group_size) == ("g7-1", "g7", 1, 2)
    assert row.tokenizer_fingerprint == service.tokenizer.fingerprint and row.model == service.policy.model_name
    # the config's sampling is the default; a caller's replaces it for its call
    assert '"max_tokens":128' in row.sampling_params_json
    other = service.sampling.model_copy(update={"max_tokens": 64})
    [capped] = asyncio.run(service.run(task, 0, Group("g7", group_size=2), sampling=other))
    assert '"max_tokens":64' in capped.sampling_params_json


def test_without_a_group_each_episode_is_its_own(service, task):
    a, b = (asyncio.run(service.run(task, 0))[0] for _ in range(2))
    assert a.group_size == b.group_size == 1 and a.group_id != b.group_id
    assert a.rollout_id == f"{a.group_id}-0"


def test_unknown_env_is_one_masked_row(service, task):
    [row] = asyncio.run(service.run(task.model_copy(update={"env": "nowhere"}), 0, Group("g")))
    assert (row.status, row.mask_sample, row.failure_stage, row.failure_kind) == (
        "env_error", True, "admission", "unknown_env")
    assert "nowhere" in row.error and "weather" in row.error


def test_infrastructure_failures_rerun_with_a_fresh_session(service, policy, task):
    flaky = FlakyPolicy(policy, failures=1)
    [row] = asyncio.run(service.run(task, 0, Group("g", attempt=2), policy=flaky))
    assert (row.status, row.reward, row.attempt) == ("ok", 1.0, 3)  # tries spent elsewhere count too
    assert flaky.sessions[0] == "g-0.a2" and flaky.sessions[1] == "g-0.a3"
    [failed] = asyncio.run(service.run(task, 0, Group("h"), policy=FlakyPolicy(policy, failures=10)))
    assert (failed.status, failed.mask_sample, failed.attempt) == ("infra_error", True, 2)
    assert "after 3 attempts" in failed.error


def test_shared_builds_once_per_config_and_options(policy):
    first = EpisodeService.shared(CONFIG, OVERRIDES, policy=policy, max_total_tokens=512)
    assert EpisodeService.shared(CONFIG, OVERRIDES, policy=policy, max_total_tokens=512) is first
    wider = EpisodeService.shared(CONFIG, OVERRIDES, policy=policy, max_total_tokens=1024)
    assert wider is not first
    assert first.agent_configs["weather"].max_total_tokens == 512
    assert wider.agent_configs["weather"].max_total_tokens == 1024


def test_from_config_refuses_an_env_it_does_not_define(policy):
    with pytest.raises(ValueError, match=r"envs: \['nowhere'\] not in the run config's envs \['weather'\]"):
        EpisodeService.from_config(CONFIG, OVERRIDES, policy=policy, envs=["nowhere"])
