"""TextArena games (the real `textarena` package) and a Gymnasium env (`gymnasium.make`) as gym_ray step
environments: scripted policies play them through the env-step agent on Ray into Parquet that passes the row
checks, per-step rewards kept; wrong play scores what the library says; a bad env_id is a one-line error."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import fault_helpers
import pytest
import ray
from fault_helpers import ScriptClient

from gym_ray.collect.api import Collector, load_run_tasks
from gym_ray.collect.sink import read_rollout_table
from gym_ray.config import EnvConfig, load_config
from gym_ray.models.names import tokenizer_path_for
from gym_ray.report.checks import run_checks
from gym_ray.resources import make_env_client
from gym_ray.types import Message, Task, rollouts_from_arrow

ray.cloudpickle.register_pickle_by_value(fault_helpers)  # ScriptClient and the scripts reach the agent actors
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # by value

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "gym_ray" / "environments"
_HINT = re.compile(r"\[(\d+)\][^\[]*?\n\[GAME\] The target number is (higher|lower)")


def _hanoi(n: int, a: str, b: str, c: str) -> list[tuple[str, str]]:
    return [] if n == 0 else [*_hanoi(n - 1, a, c, b), (a, c), *_hanoi(n - 1, b, a, c)]


def textarena_reply(prompt_text: str, turn: int) -> str:
    """GuessTheNumber: binary search over the game's hints; TowerOfHanoi: the optimal move of this turn."""
    if "Guess The Number" in prompt_text:
        lo, hi = map(int, re.search(r"between (\d+) and (\d+)", prompt_text).groups())
        for guess, hint in _HINT.findall(prompt_text):
            lo, hi = (int(guess) + 1, hi) if hint == "higher" else (lo, int(guess) - 1)
        return f"My guess is [{(lo + hi) // 2}]"
    disks = int(re.search(r"Tower of Hanoi with (\d+) disks", prompt_text).group(1))
    source, target = _hanoi(disks, "A", "B", "C")[turn]
    return f"[{source} {target}]"


def reverse_reply(prompt_text: str, turn: int) -> str:
    return re.findall(r"reverse '(\w+)'", prompt_text)[-1][::-1]


def collect(name: str, fn, tmp_path: Path, repeats: int = 2):
    cfg = load_config(ENVS / name / "config.yaml", [
        "model.kind=scripted", "model.hosting=local", "model.chat_template=chatml_tools",
        f"collect.num_repeats={repeats}", "collect.concurrency=8"])
    policy = ScriptClient(cfg.model, tokenizer_path_for(cfg.model), fn)
    with Collector(cfg, policy) as col:
        summary = asyncio.run(col.collect_to_dir(load_run_tasks(cfg), tmp_path, progress=False))
    rows = rollouts_from_arrow(read_rollout_table(tmp_path))
    report = run_checks(tmp_path)
    assert not report.contract_broken, report.to_json()["counts"]
    return cfg, summary, rows


def test_textarena_games_play_into_parquet_that_passes_the_checks(ray_cluster, tmp_path):
    cfg, summary, rows = collect("textarena", textarena_reply, tmp_path)
    tasks = load_run_tasks(cfg)
    games = {t.verifier_metadata["env_id"] for t in tasks}
    assert games == {"GuessTheNumber-v0", "TowerOfHanoi-v0"}
    assert summary["overall"]["rollouts"] == len(rows) == 2 * len(tasks)
    assert {r.status.value for r in rows} == {"ok"}
    for r in rows:
        r.check_invariants()
        game = json.loads(r.task_json)["verifier_metadata"]["env_id"]
        # TextArena scores at the end: every step 0, the last one TextArena's win (1)
        assert r.turn_rewards[-1] == r.reward == 1.0 and set(r.turn_rewards[:-1]) <= {0.0}
        assert r.num_turns == len(r.turn_rewards) and not r.truncated
        if game == "TowerOfHanoi-v0":
            assert r.num_turns == 7  # the optimal solution for 3 disks, every move accepted
        else:
            assert 1 <= r.num_turns <= 5  # binary search over 1..20
        assert json.loads(r.metrics_json)["step_info"][-1]["reason"].startswith("Congratulations!")
        users = [m["content"] for m in json.loads(r.messages_json) if m["role"] == "user"]
        # each observation is only the new part of TextArena's game log, never the intro again
        assert sum("You are playing" in u or "You are Player 0" in u for u in users) == 1


def test_textarena_wrong_moves_score_what_the_game_says():
    env = make_env_client("ta", EnvConfig(server="gym_ray.integrations.textarena:TextArenaEnv",
                                          config={"env_id": "GuessTheNumber-v0"}))
    task = Task(task_id="t", env="ta", prompt=[Message(role="user", content="play")],
                verifier_metadata={"seed": 1})

    async def go():
        first = await env.reset("s", task)
        steps = []
        while not steps or not steps[-1].done:
            steps.append(await env.step("s", "[99]"))  # outside 1..20: an invalid move, every time
        return first, steps, await env.verify("s", task, [])

    first, steps, result = asyncio.run(go())
    assert "between 1 and 20" in first
    assert steps[-1].info["invalid_move"] is True and "outside the range" in steps[-1].info["reason"]
    assert result.reward == sum(s.reward for s in steps) < 1.0


def test_gymnasium_env_plays_into_parquet_with_per_step_rewards(ray_cluster, tmp_path):
    cfg, summary, rows = collect("reverse_words", reverse_reply, tmp_path)
    assert cfg.envs["reverse_words"].server == "gym_ray.integrations.gymnasium:GymnasiumEnv"
    assert {r.status.value for r in rows} == {"ok"} and len(rows) == summary["overall"]["rollouts"] == 16
    for r in rows:
        assert len(r.turn_rewards) == 3 and r.turn_rewards == [pytest.approx(1 / 3)] * 3
        assert r.reward == pytest.approx(1.0) and r.num_turns == 3 and not r.truncated
        assert json.loads(r.metrics_json)["stop_reason"] == "done"


def test_gymnasium_wrong_and_malformed_actions():
    import gymnasium

    from gym_ray.environments.reverse_words.env import ENV_ID

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


@pytest.mark.parametrize(("server", "env_id", "message"), [
    ("textarena:TextArenaEnv", "Wordl-v0", "config.env_id: 'Wordl-v0' is not a registered TextArena environment"),
    ("gymnasium:GymnasiumEnv", "NoSuchEnv-v0", "config.env_id: 'NoSuchEnv-v0' is not a registered Gymnasium"),
])
def test_an_unknown_env_id_is_a_one_line_error(server, env_id, message):
    env = make_env_client("x", EnvConfig(server=f"gym_ray.integrations.{server}", config={"env_id": env_id}))
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        asyncio.run(env.tools())
    assert "\n" not in str(err.value)
