"""Tool results recorded per call, `gym-ray replay` (a stored episode's tool calls made again against a fresh
session; every differing result named, exit 1) and the opt-in cache of deterministic tools' results."""

from __future__ import annotations

import asyncio
import json

import pytest
from replay_envs import ENVS, MagicWords, ledger_task, play, run_config, scripted_policy, word_task

from gym_ray.cli import main
from gym_ray.config import validate_config
from gym_ray.episodes import EpisodeService
from gym_ray.resources.records import RESULT_CAP, digest
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.rundir import read_run


@pytest.fixture(scope="module")
def policy():
    return scripted_policy()


def test_replay_of_a_deterministic_episode_matches_and_a_noisy_one_names_its_calls(policy, tmp_path, capsys):
    tasks = [ledger_task(0, "ledger", [2, 3]), ledger_task(1, "noisy", [4, 1])]
    run = play(policy, tmp_path / "run", tasks, group_size=1)
    rows = {r["env"]: r for r in read_run(run).to_pylist()}
    records = json.loads(rows["ledger"]["tool_calls_json"])
    assert [(r["name"], r["status"], r["result"]) for r in records] == [("add", "ok", "total 2"),
                                                                        ("add", "ok", "total 5")]
    assert records[0]["sha256"] == digest("total 2")

    assert main(["replay", str(run), rows["ledger"]["rollout_id"]]) == 0
    assert "2 tool calls replayed, every result as recorded" in capsys.readouterr().out
    assert main(["replay", str(run), rows["noisy"]["rollout_id"]]) == 1
    out = capsys.readouterr().out
    assert "2 of 2 tool calls diverged" in out and "call 0 add: recorded 'total 4 (receipt" in out
    assert "call 1 add: recorded 'total 5 (receipt" in out

    assert main(["replay", str(run), "nope"]) == 2
    assert "no rollout 'nope'" in capsys.readouterr().err


def test_a_long_result_is_recorded_by_its_digest(tmp_path):
    from gym_ray.resources.records import tool_record

    long = "x" * (RESULT_CAP + 1)
    record = tool_record("c1", "read", {"b": 1, "a": 2}, long)
    assert "result" not in record and record["sha256"] == digest(long) and record["chars"] == RESULT_CAP + 1
    assert record["args_sha256"] == tool_record("c1", "read", {"a": 2, "b": 1}, "")["args_sha256"]


def test_the_cache_serves_repeated_calls_of_cacheable_tools_only():
    class Small(MagicWords):
        tool_cache_size = 2

    rt = EnvRuntime(Small())
    task = word_task(0, "K0")

    async def calls():
        out = []
        for sid, (name, args) in enumerate([("lookup", {"key": "K0"}), ("lookup", {"key": "K0"}),
                                            ("stamp", {}), ("stamp", {}), ("lookup", {"key": "K1"}),
                                            ("lookup", {"key": "K2"}), ("lookup", {"key": "K0"})]):
            await rt.seed_session(f"s{sid}", task)  # each call from another episode
            out.append(await rt.call_tool_raw(f"s{sid}", name, args))
        return out

    out = asyncio.run(calls())
    cached = [getattr(o, "cached", False) for o in out]
    # the repeat is served; a non-cacheable tool never is; K0 was dropped once two newer keys came
    assert cached == [False, True, False, False, False, False, False]
    assert out[0] == out[1] == "WORD:apple" and out[2] != out[3] and rt.tool_cache.hits == 1


def test_cache_hits_are_counted_in_the_row(policy):
    service = EpisodeService.from_config(validate_config(run_config({"magic": ENVS["magic"]})), policy=policy)
    first = asyncio.run(service.run(word_task(0, "K2"), 0))[0]
    second = asyncio.run(service.run(word_task(1, "K2"), 0))[0]
    assert "tool_cache_hits" not in json.loads(first.metrics_json)
    assert json.loads(second.metrics_json)["tool_cache_hits"] == 1
    records = json.loads(second.tool_calls_json)
    assert [(r["name"], r.get("cached", False)) for r in records] == [("lookup", True), ("stamp", False)]
    assert second.reward == 1.0
