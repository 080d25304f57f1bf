"""TextArena games (the real `textarena` package) as gym_ray step environments: a scripted policy plays
GuessTheNumber and TowerOfHanoi through the env-step agent on Ray into Parquet that passes the row checks;
wrong play scores what the game says; a bad env_id (TextArena's or Gymnasium's) is a one-line error."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import fault_helpers
import pytest
import ray
from fault_helpers import scripted_collect

from gym_ray.collect.api import load_run_tasks
from gym_ray.config import EnvConfig, load_config
from gym_ray.resources.client import make_env_client
from gym_ray.types import Message, Task

ray.cloudpickle.register_pickle_by_value(fault_helpers)  # ScriptClient and the scripts reach the agent actors
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # by value

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "environments"
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


def collect(name: str, fn, tmp_path: Path, repeats: int = 2):
    config = ENVS / name / "config.yaml"
    summary, rows = scripted_collect(config, fn, tmp_path, f"collect.num_repeats={repeats}", "collect.concurrency=8")
    return load_config(config), summary, rows


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


@pytest.mark.parametrize(("server", "env_id", "message"), [
    ("textarena:TextArenaEnv", "Wordl-v0", "config.env_id: 'Wordl-v0' is not a registered TextArena environment"),
    ("gymnasium:GymnasiumEnv", "NoSuchEnv-v0", "config.env_id: 'NoSuchEnv-v0' is not a registered Gymnasium"),
])
def test_an_unknown_env_id_is_a_one_line_error(server, env_id, message):
    env = make_env_client("x", EnvConfig(server=f"gym_ray.integrations.{server}", config={"env_id": env_id}))
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        asyncio.run(env.tools())
    assert "\n" not in str(err.value)
