"""scienceworld: the simulator's gold action sequences, played through the env's client, score 100 (reward 1,
success); a no-op run scores 0 and the step cap ends it; every episode's JVM is gone once its session closes."""

from __future__ import annotations

import asyncio
import shutil

import psutil
import pytest

pytest.importorskip("scienceworld")
if shutil.which("java") is None:
    pytest.skip("ScienceWorld's simulator needs a Java runtime", allow_module_level=True)

from env_helpers import ENVIRONMENTS  # noqa: E402
from gym_ray_env_scienceworld.server import start, stop  # noqa: E402

from gym_ray.config import EnvConfig, load_config  # noqa: E402
from gym_ray.resources import EnvError  # noqa: E402
from gym_ray.resources.client import make_env_client  # noqa: E402
from gym_ray.tasks import load_tasks  # noqa: E402
from gym_ray.types import Task  # noqa: E402

# Short gold paths, so the test stays cheap (each episode starts a JVM).
ORACLE_TASKS = ("lifespan-longest-lived", "power-component")


def setup(**config):
    base = load_config(ENVIRONMENTS / "scienceworld" / "config.yaml").envs["scienceworld"]
    cfg = EnvConfig.model_validate({**base.model_dump(), "config": {**base.config, **config}})
    return make_env_client("scienceworld", cfg), load_tasks(cfg.data)


def jvms() -> int:
    return sum(1 for p in psutil.Process().children(recursive=True) if p.name() == "java")


def first_of(tasks: list[Task], name: str) -> Task:
    return next(t for t in tasks if t.verifier_metadata["task_name"] == name)


def gold_paths(tasks: list[Task]) -> list[list[str]]:
    sim = start("boil", 0, "", 100)
    try:
        paths = []
        for t in tasks:
            sim.load(t.verifier_metadata["task_name"], t.verifier_metadata["variation"], "", generateGoldPath=True)
            paths.append(sim.get_gold_action_sequence())
        return paths
    finally:
        stop(sim)


def play(env, sid: str, task: Task, actions: list[str]):
    """Reset, step through `actions` (until done), close; the JVMs running mid-episode, the steps, the verdict."""

    async def go():
        first = await env.reset(sid, task)
        running = jvms()
        steps = []
        for action in actions:
            steps.append(await env.step(sid, action))
            if steps[-1].done:
                break
        result = await env.verify(sid, task, [])
        await env.close_session(sid)
        return first, running, steps, result

    return asyncio.run(go())


def test_splits_are_the_simulators():
    sizes = {split: len(load_tasks([ENVIRONMENTS / "scienceworld" / "data" / f"{split}.parquet"]))
             for split in ("train", "dev", "test")}
    assert sizes == {"train": 3592, "dev": 1796, "test": 1819}
    _, tasks = setup()
    assert len({t.verifier_metadata["task_name"] for t in tasks}) == 30


def test_gold_paths_score_100_and_no_jvm_outlives_its_session():
    env, tasks = setup()
    picked = [first_of(tasks, name) for name in ORACLE_TASKS]
    paths = gold_paths(picked)
    before = jvms()
    for i, (task, path) in enumerate(zip(picked, paths, strict=True)):
        assert path and not path[0].startswith("ERROR"), task.task_id
        first, running, steps, result = play(env, f"gold{i}", task, path)
        assert "Task Description" in first and running == before + 1
        assert steps[-1].done and steps[-1].info["success"] and steps[-1].info["score"] == 100, task.task_id
        assert result.reward == pytest.approx(1.0) and result.error is None, (task.task_id, result)
        assert jvms() == before, f"{task.task_id}: the simulator outlived its session"


def test_no_op_scores_zero_and_the_step_cap_ends_the_episode():
    env, tasks = setup(step_limit=2)
    task = first_of(tasks, "lifespan-longest-lived")
    before = jvms()
    _, _, steps, result = play(env, "noop", task, ["look around", "wait1", "wave at the sky", "wait1", "wait1", "wait1"])
    assert len(steps) < 6 and steps[-1].done and not steps[-1].info["success"]
    assert all(s.reward == 0.0 for s in steps) and result.reward == 0.0 and result.error is None
    assert jvms() == before


def test_bad_row_is_an_env_error_naming_the_field():
    env, _ = setup()
    bad = Task(task_id="bad", env="scienceworld", prompt=[{"role": "system", "content": "x"}],
               verifier_metadata={"variation": 0})

    async def go():
        try:
            await env.reset("bad", bad)
        finally:
            await env.close_session("bad")

    with pytest.raises(EnvError, match="task bad: verifier_metadata needs task_name and variation"):
        asyncio.run(go())
