"""ToolCallingAgent against the real scripted policy and the real weather environment, in-process."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from test_transcript_property import assert_token_exact

from gym_ray.agents.base import EpisodeContext, load_tokenizer
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import EnvConfig, ModelConfig, SamplingConfig, load_config
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import rollouts_from_arrow, rollouts_to_arrow

WEATHER = Path(__file__).resolve().parents[1] / "environments" / "weather"
_RESULT = re.compile(r"The weather in (.+?) is (\w+), (-?\d+) °C\.")


def weather_script(prompt_text: str, turn: int):
    """Turn 0: call get_weather for the city asked about; then answer from the tool's result in the prompt."""
    if turn == 0:
        question = prompt_text.rsplit("<|im_start|>user\n", 1)[1]
        city = re.search(r"(?:in|for) ([A-Z][a-z]+(?: [A-Z][a-z]+)*)", question).group(1)
        return {"name": "get_weather", "arguments": {"city": city}}
    city, condition, temp = _RESULT.findall(prompt_text)[-1]
    return f"In {city} it is {condition}, {temp} °C."


class InProcessScripted:
    """The scripted policy as a PolicyClient without Serve, recording what it was given and returned."""

    def __init__(self, policy: ScriptedPolicy):
        self.policy = policy
        self.model_name = policy.model_name
        self.calls: list[tuple[list[int], list[int], list[float]]] = []

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        gen = await self.policy.generate(list(prompt_token_ids), sampling)
        self.calls.append((list(prompt_token_ids), list(gen.token_ids), list(gen.logprobs)))
        return gen


@pytest.mark.parametrize("template", [None, "chatml_tools"])
def test_weather_episodes_with_scripted_policy(default_model_path, template):
    run_cfg = load_config(WEATHER / "config.yaml")
    env_cfg: EnvConfig = run_cfg.envs["weather"]
    tasks = load_tasks(env_cfg.data, default_env="weather")
    chat = load_tokenizer(default_model_path, template)
    scripted = ScriptedPolicy(
        ModelConfig(kind="scripted", name="scripted", script=f"{__name__}:weather_script"), default_model_path
    )
    env = make_env_client("weather", env_cfg)
    agent = ToolCallingAgent(env_cfg.agent)

    async def episode(i, task):
        policy = InProcessScripted(scripted)
        ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(max_tokens=128),
                             config=env_cfg.agent, rollout_id=f"r{i}", group_id=f"g{i}", rollout_index=0,
                             group_size=1, session_id=f"s{i}")
        return policy, await agent.run(task, ctx)

    async def main():
        return await asyncio.gather(*(episode(i, t) for i, t in enumerate(tasks)))

    results = asyncio.run(main())
    assert len(results) == len(tasks) >= 3
    for policy, [row] in results:
        assert row.status == "ok", row.error
        assert (row.reward, row.num_turns, row.num_tool_calls, row.truncated) == (1.0, 2, 1, False)
        assert dict(zip(row.reward_component_names, row.reward_component_values, strict=True)) == {
            "called_tool": 1.0, "condition": 1.0, "temperature": 1.0}
        assert_token_exact(row, policy)
        assert row.call_finish_reasons == ["stop", "stop"]
        roles = [m["role"] for m in json.loads(row.messages_json)]
        assert roles[-3:] == ["assistant", "tool", "assistant"]
        prompt_text = chat.hf.decode(row.prompt_token_ids)
        assert ("<tools>" in prompt_text) == (template == "chatml_tools")
    rows = [r for _, rs in results for r in rs]
    assert [r.response_token_ids for r in rollouts_from_arrow(rollouts_to_arrow(rows))] == [
        r.response_token_ids for r in rows]


def test_blackjack_episodes_with_env_step_agent(default_model_path):
    """The real blackjack env in-process: the scripted player hits once then stands; rewards per step
    are kept, the reward is their sum, and the env's own verify (opt-in) agrees."""
    run_cfg = load_config(Path(__file__).resolve().parents[1] / "environments" / "blackjack" / "config.yaml")
    env_cfg: EnvConfig = run_cfg.envs["blackjack"]
    tasks = load_tasks(env_cfg.data, default_env="blackjack")
    chat = load_tokenizer(default_model_path)
    scripted = ScriptedPolicy(ModelConfig(kind="scripted", name="scripted",
                                          replies=["I will hit. <action>hit</action>", "<action>stand</action>"]),
                              default_model_path)
    env = make_env_client("blackjack", env_cfg)

    async def episode(i, task, verify):
        config = env_cfg.agent.model_copy(update={"kwargs": {"verify": verify}})
        policy = InProcessScripted(scripted)
        ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(max_tokens=64),
                             config=config, rollout_id=f"r{i}", group_id=f"g{i}", rollout_index=0, group_size=1,
                             session_id=f"s{i}-{verify}")
        return policy, await EnvStepAgent(config).run(task, ctx)

    async def main():
        return await asyncio.gather(*(episode(i, t, v) for i, t in enumerate(tasks) for v in (False, True)))

    results = asyncio.run(main())
    rewards = {}
    for k, (policy, [row]) in enumerate(results):
        assert row.status == "ok", row.error
        assert_token_exact(row, policy)
        verify_info = json.loads(row.metrics_json).get("verify_info")
        assert (verify_info is not None and verify_info["steps"] == row.num_turns) == (k % 2 == 1)
        assert not row.truncated and 1 <= row.num_turns <= 2 and len(row.turn_rewards) == row.num_turns
        assert row.reward == sum(row.turn_rewards) and row.reward in (0.0, 0.5, 1.0)
        assert json.loads(row.messages_json)[2]["content"].startswith("Your hand:")
        rewards.setdefault(row.task_id, set()).add(row.reward)
    assert all(len(v) == 1 for v in rewards.values())  # verify's score == the sum of step rewards
