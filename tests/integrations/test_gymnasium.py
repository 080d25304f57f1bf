"""A Gymnasium env (`gymnasium.Env`, `gymnasium.make`) as a gym_ray step environment: `reverse_words` played
by a scripted policy through the env-step agent on Ray into Parquet that passes the row checks, per-step
rewards kept; wrong and malformed actions; a Discrete action space (CartPole) from text."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import pytest
import ray
from test_textarena import ENVS, collect

from gym_ray.config import EnvConfig, load_config
from gym_ray.integrations.gymnasium import GymnasiumEnv
from gym_ray.resources.client import make_env_client
from gym_ray.resources.runtime import import_server
from gym_ray.types import Message, Task

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the script reaches the agent actors by value


def reverse_reply(prompt_text: str, turn: int) -> str:
    return re.findall(r"reverse '(\w+)'", prompt_text)[-1][::-1]


def test_gymnasium_env_plays_into_parquet_with_per_step_rewards(ray_cluster, tmp_path):
    cfg, summary, rows = collect("reverse_words", reverse_reply, tmp_path)
    assert issubclass(import_server(cfg.envs["reverse_words"].server), GymnasiumEnv)
    assert {r.status.value for r in rows} == {"ok"} and len(rows) == summary["overall"]["rollouts"] == 16
    for r in rows:
        assert len(r.turn_rewards) == 3 and r.turn_rewards == [pytest.approx(1 / 3)] * 3
        assert r.reward == pytest.approx(1.0) and r.num_turns == 3 and not r.truncated
        assert json.loads(r.metrics_json)["stop_reason"] == "done"


def test_gymnasium_wrong_and_malformed_actions():
    import gymnasium
    from gym_ray_env_reverse_words.env import ENV_ID

    cfg = load_config(ENVS / "reverse_words" / "config.yaml").envs["reverse_words"]
    env = make_env_client("reverse_words", cfg)
    task = Task(task_id="t", env="reverse_words", prompt=[Message(role="user", content="play")],
                verifier_metadata={"seed": 4})

    async def go(actions):
        await env.reset("s", task)
        steps = [await env.step("s", a) for a in actions]
        return steps, await env.verify("s", task, [])

    wrong, result = asyncio.run(go(["no", "no", "no"]))
    assert [s.reward for s in wrong] == [0.0] * 3 and wrong[-1].done and result.reward == 0.0
    # the adapter's episodes are gymnasium's own: same seed, same words as gymnasium.make + reset
    words = gymnasium.make(ENV_ID, num_words=3).reset(seed=4)[1]["words"]
    assert [w[::-1] in s.observation for w, s in zip(words, wrong, strict=True)] == [True] * 3

    discrete = make_env_client("cp", EnvConfig(server="gym_ray.integrations.gymnasium:GymnasiumEnv",
                                               config={"env_id": "CartPole-v1"}))

    async def cartpole():
        first = await discrete.reset("c", task)
        good = await discrete.step("c", "I push right: 1")
        bad = await discrete.step("c", "left")
        return first, good, bad, await discrete.verify("c", task, [])

    first, good, bad, verdict = asyncio.run(cartpole())
    assert len(json.loads(first)) == 4 and good.reward == 1.0 and not good.done  # a Discrete action from text
    assert bad.done and bad.reward == 0.0 and "malformed action" in verdict.info["reason"]
    assert verdict.reward == 1.0  # the step rewards so far
