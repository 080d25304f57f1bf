"""blackjack: seeded reproducible deals, step by step; win 1, push 0.5, loss 0, malformed 0 with a reason."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from gym_ray_env_blackjack.server import shuffled_deck, total

from gym_ray.config import load_config
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import load_tasks
from gym_ray.types import Message, Task

ENV_DIR = Path(__file__).parents[2] / "environments" / "blackjack"


def setup():
    cfg = load_config(ENV_DIR / "config.yaml")
    assert cfg.envs["blackjack"].agent.cls == "gym_ray.agents.env_step:EnvStepAgent"
    return make_env_client("blackjack", cfg.envs["blackjack"]), load_tasks(cfg.envs["blackjack"].data)


def seeded(seed: int) -> Task:
    return Task(
        task_id=f"bj{seed}",
        env="blackjack",
        prompt=[Message(role="user", content="play")],
        verifier_metadata={"seed": seed},
    )


async def play(env, sid, task, actions):
    first = await env.reset(sid, task)
    steps = []
    for a in actions:
        steps.append(await env.step(sid, a))
        if steps[-1].done:
            break
    return first, steps, await env.verify(sid, task, [])


def test_totals():
    assert total(["A♠", "K♥"]) == 21
    assert total(["A♠", "A♥", "9♦"]) == 21
    assert total(["K♠", "Q♥", "5♦"]) == 25
    assert total(["10♠", "7♥"]) == 17


def test_deals_are_reproducible_and_differ_by_seed():
    env, tasks = setup()
    assert len(tasks) >= 5

    async def go():
        return [await env.reset(f"s{i}", t) for i, t in enumerate(tasks)] + [
            await env.reset("again", tasks[0])
        ]

    firsts = asyncio.run(go())
    assert firsts[0] == firsts[-1]
    assert len(set(firsts[:-1])) == len(tasks)
    for t, obs in zip(tasks, firsts, strict=False):
        deck = shuffled_deck(t.verifier_metadata["seed"])
        assert obs.startswith(f"Your hand: {deck[0]} {deck[1]} ({total(deck[:2])}). Dealer shows: {deck[2]}.")
        assert deck[3] not in obs  # the hole card stays hidden


def _totals(observation: str) -> tuple[int, int]:
    mine, theirs = re.findall(r"\((\d+)\)", observation)
    return int(mine), int(theirs)


def test_standing_scores_by_the_rules():
    env, _ = setup()
    seen = set()

    async def go():
        return [await play(env, f"s{seed}", seeded(seed), ["<action>stand</action>"]) for seed in range(40)]

    for _, (step,), result in asyncio.run(go()):
        me, dealer = _totals(step.observation)
        expected = 1.0 if dealer > 21 or me > dealer else 0.5 if me == dealer else 0.0
        assert step.done and step.reward == expected and result.reward == expected
        assert result.info["outcome"] == {1.0: "win", 0.5: "push", 0.0: "lose"}[expected]
        seen.add(expected)
    assert seen == {0.0, 0.5, 1.0}  # 40 deals cover every outcome


def test_hitting_until_bust_scores_zero():
    env, _ = setup()

    async def go():
        return await play(env, "s", seeded(5), ["I'll take one. <action>hit</action>"] * 12)

    _, steps, result = asyncio.run(go())
    assert steps[-1].done and "Bust" in steps[-1].observation
    assert all(not s.done for s in steps[:-1]) and result.reward == 0.0
    assert result.info["steps"] == len(steps)


def test_malformed_action_ends_with_zero_and_a_reason():
    env, _ = setup()

    async def go():
        result = await play(env, "s", seeded(3), ["I think I should hit"])
        with pytest.raises(EnvError, match="step after the episode ended"):
            await env.step("s", "<action>stand</action>")
        return result

    _, (step,), result = asyncio.run(go())
    assert step.done and step.reward == 0.0
    assert result.reward == 0.0 and "malformed action" in result.info["reason"]


def test_concurrent_games_are_isolated():
    env, _ = setup()

    async def go(actions):
        return await asyncio.gather(*(play(env, f"g{s}", seeded(s), actions) for s in range(100)))

    alone = [
        asyncio.run(play(env, f"solo{s}", seeded(s), ["<action>hit</action>", "<action>stand</action>"]))
        for s in range(100)
    ]
    together = asyncio.run(go(["<action>hit</action>", "<action>stand</action>"]))
    assert [(f, [x.observation for x in st], r.reward) for f, st, r in together] == [
        (f, [x.observation for x in st], r.reward) for f, st, r in alone
    ]
