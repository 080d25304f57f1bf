"""textworld_express: the games' gold paths, played through the env's client, win with score 1; no-op and
garbled commands score 0; every episode's JVM is gone once its session closes."""

from __future__ import annotations

import asyncio
import shutil

import psutil
import pytest

pytest.importorskip("textworld_express")
if shutil.which("java") is None:
    pytest.skip("TextWorldExpress's simulator needs a Java runtime", allow_module_level=True)

from env_helpers import ENVIRONMENTS, play_all  # noqa: E402
from gym_ray_env_textworld_express.server import GAMES, new_game, start, stop  # noqa: E402

from gym_ray.config import load_config  # noqa: E402
from gym_ray.resources import EnvError  # noqa: E402
from gym_ray.resources.client import make_env_client  # noqa: E402
from gym_ray.tasks import load_tasks  # noqa: E402
from gym_ray.types import Task  # noqa: E402

DATA = ENVIRONMENTS / "textworld_express" / "data"


def setup():
    cfg = load_config(ENVIRONMENTS / "textworld_express" / "config.yaml").envs["textworld_express"]
    return make_env_client("textworld_express", cfg), load_tasks(cfg.data)


def jvms() -> int:
    return sum(1 for p in psutil.Process().children(recursive=True) if p.name() == "java")


def gold_paths(tasks: list[Task]) -> list[list[str]]:
    sim = start(100)
    try:
        paths = []
        for t in tasks:
            new_game(sim, t.verifier_metadata, gold=True)
            paths.append(sim.getGoldActionSequence())
        return paths
    finally:
        stop(sim)


def test_folds_are_the_simulators():
    for fold, low in (("train", 0), ("dev", 10000), ("test", 20000)):
        tasks = load_tasks([DATA / f"{fold}.parquet"])
        seeds = {g: sorted(t.verifier_metadata["seed"] for t in tasks if t.verifier_metadata["game"] == g)
                 for g in GAMES}
        assert all(s == list(range(low, low + 1000)) for s in seeds.values()), fold


def test_gold_paths_win_garbled_and_no_op_score_zero_and_no_jvm_leaks():
    env, tasks = setup()
    train = load_tasks([DATA / "train.parquet"])
    picked = [next(t for t in rows if t.verifier_metadata["game"] == g) for g in GAMES for rows in (tasks, train)]
    paths = gold_paths(picked)
    before = jvms()
    runs = [(f"gold{i}", t, p) for i, (t, p) in enumerate(zip(picked, paths, strict=True))]
    tested = list(zip(picked, paths, strict=True))[::2]  # the test-fold game of each kind
    runs += [(f"garbled{i}", t, [a[::-1] for a in p]) for i, (t, p) in enumerate(tested)]
    runs += [(f"noop{i}", t, ["look around", "inventory"]) for i, (t, _) in enumerate(tested)]
    results = play_all(env, runs)
    assert jvms() == before, "a simulator outlived its session"
    for (sid, task, _), (first, steps, result) in zip(runs, results, strict=True):
        assert first.strip() and result.error is None, (sid, task.task_id)
        if sid.startswith("gold"):
            assert steps[-1].done and steps[-1].info["won"] and steps[-1].info["score"] == 1.0, task.task_id
            assert result.reward == pytest.approx(1.0), (task.task_id, result)
        else:
            assert result.reward == 0.0 and not steps[-1].info["won"], (sid, task.task_id, result)
    assert len(results) == len(picked) + 2 * len(tested) == 12


def test_bad_row_is_an_env_error_naming_the_field():
    env, _ = setup()
    bad = Task(task_id="bad", env="textworld_express", prompt=[{"role": "system", "content": "x"}],
               verifier_metadata={"game": "coin"})

    async def go():
        try:
            await env.reset("bad", bad)
        finally:
            await env.close_session("bad")

    with pytest.raises(EnvError, match="task bad: verifier_metadata needs fold, seed"):
        asyncio.run(go())
