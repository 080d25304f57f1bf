"""A bad environment costs its own episodes only: hung sync hooks, async hooks that
block the event loop, and huge tool outputs, each with unrelated episodes running beside them."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time

import hostile_envs
import pytest
import ray

from gym_ray.collect.api import Collector
from gym_ray.config import validate_config
from gym_ray.resources.isolation import EnvHungError, EnvLoop, HookThreads
from gym_ray.resources.local import LocalEnvClient
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.types import Message, Task

ray.cloudpickle.register_pickle_by_value(hostile_envs)


def task(i: int, **meta) -> Task:
    return Task(task_id=f"t{i}", env="x", prompt=[Message(role="user", content=f"question {i}")],
                verifier_metadata=meta)


def test_hung_sync_verifies_do_not_starve_other_verifies():
    """16 verifies that never return, then 100 ordinary ones: the ordinary ones all finish (Python's
    shared default executor has 6 threads here, so before the fix every one of them waited forever)."""
    release = threading.Event()
    rt = EnvRuntime(hostile_envs.HangingSyncVerify(release), "hang")

    async def go():
        hung = [asyncio.ensure_future(rt.verify(f"h{i}", task(i, hang_s=600), [])) for i in range(16)]
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        done = await asyncio.wait_for(asyncio.gather(*(rt.verify(f"n{i}", task(i), []) for i in range(100))), 20)
        elapsed = time.monotonic() - t0
        for h in hung:
            h.cancel()
        return done, elapsed

    try:
        done, elapsed = asyncio.run(go())
    finally:
        release.set()
    assert [r.reward for r in done] == [1.0] * 100 and elapsed < 15


def test_a_full_hook_pool_fails_fast_instead_of_queueing():
    pool = HookThreads("tiny", max_threads=2, hung_after_s=0.2)
    gate = threading.Event()

    async def go():
        stuck = [asyncio.ensure_future(pool.run(lambda: gate.wait(30))) for _ in range(2)]
        await asyncio.sleep(0.3)
        with pytest.raises(EnvHungError, match="all 2 hook threads"):
            await pool.run(lambda: 1)
        gate.set()
        await asyncio.gather(*stuck)
        return await pool.run(lambda: 7)  # freed threads serve again

    assert asyncio.run(go()) == 7


def test_a_full_pool_of_quick_calls_queues_instead_of_refusing():
    """A loaded replica keeps every thread busy with calls that finish: that is load, not a hang."""
    pool = HookThreads("busy", max_threads=2, hung_after_s=5)

    def quick(i: int) -> int:
        time.sleep(0.01)
        return i

    async def go():
        return await asyncio.gather(*(pool.run(functools.partial(quick, i)) for i in range(50)))

    assert asyncio.run(go()) == list(range(50))


def test_env_loop_timeouts_hold_and_a_wedged_loop_is_replaced():
    """An async hook that blocks freezes its loop, not the caller's: the caller's timeout fires on time,
    and a later call moves to a fresh loop after `stall_s` instead of queueing behind the blocked one."""
    loop = EnvLoop("blocky", stall_s=0.5)

    async def block(s):
        time.sleep(s)
        return s

    async def go():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.call(lambda: block(8)), 0.3)
        timed_out_after = time.monotonic() - t0
        t1 = time.monotonic()
        fast = await asyncio.wait_for(loop.call(lambda: block(0)), 5)
        return timed_out_after, time.monotonic() - t1, fast

    timed_out_after, second, fast = asyncio.run(go())
    assert timed_out_after < 4 and fast == 0  # the blocked call holds its loop for 8 s
    assert second < 6 and loop.loops_started == 2


def _collector(envs: dict, **collect) -> Collector:
    names = {n: {"server": "gym_ray.resources:ResourceServer", "hosting": "local",
                 "agent": {"max_turns": 3}} for n in envs}
    cfg = validate_config({
        "model": {"kind": "scripted", "hosting": "local", "chat_template": "chatml_tools",
                  "replies": [{"name": "dump", "arguments": {}}, "all done"]},
        "envs": names,
        "collect": {"num_repeats": 1, "concurrency": 64, "max_retries": 0, **collect},
    })
    return Collector(cfg, envs=envs)


def _statuses(groups) -> dict[str, str]:
    return {g.task_id: g.rollouts[0].status.value for g in groups}


@pytest.mark.usefixtures("ray_cluster", "default_model_path")
def test_blocking_async_verify_costs_its_own_episodes_only():
    """`hosting: local`, an `async def verify` that sleeps 20 s on 2 of 40 episodes: those two end as
    `timeout` at the episode limit, the other 38 are scored; before, the actor's loop froze (0 rows)."""
    env = LocalEnvClient.of(hostile_envs.LoopBlockingVerify(), "x")
    tasks = [task(i, block_s=20 if i in (3, 17) else 0) for i in range(40)]
    with _collector({"x": env}, episode_timeout_s=4.0) as col:
        col.collect_sync([task(99)])  # the actor's start-up (tokenizer, policy) is not what is measured
        t0 = time.monotonic()
        groups = col.collect_sync(tasks)
        elapsed = time.monotonic() - t0
    st = _statuses(groups)
    assert st.pop("t3") == st.pop("t17") == "timeout"
    assert set(st.values()) == {"ok"} and elapsed < 15  # each blocking verify holds a loop for 20 s
    failed = next(g.rollouts[0] for g in groups if g.task_id == "t3")
    assert (failed.failure_stage, failed.failure_kind) == ("verification", "timeout")


@pytest.mark.usefixtures("ray_cluster", "default_model_path")
def test_hung_sync_verify_in_an_agent_actor_spares_unrelated_episodes():
    env = LocalEnvClient.of(hostile_envs.HangingSyncVerify(), "x")
    tasks = [task(i, hang_s=60 if i < 16 else 0) for i in range(116)]
    with _collector({"x": env}, episode_timeout_s=3.0, concurrency=128) as col:
        groups = col.collect_sync(tasks)
    st = _statuses(groups)
    assert [st[f"t{i}"] for i in range(16)] == ["timeout"] * 16
    assert [st[f"t{i}"] for i in range(16, 116)] == ["ok"] * 100


@pytest.mark.usefixtures("ray_cluster", "default_model_path")
def test_huge_tool_output_is_capped_and_stalls_nobody():
    """4 episodes get a 10 MB tool result, 60 a small one: the big ones are cut to the agent's cap (the
    model is told, the row counts it), nothing times out, and no row stores the 10 MB."""
    env = LocalEnvClient.of(hostile_envs.Flood(), "x")
    tasks = [task(i, size=10_000_000 if i % 16 == 0 else 100) for i in range(64)]
    with _collector({"x": env}, episode_timeout_s=10.0) as col:
        groups = col.collect_sync(tasks)
    rows = {g.task_id: g.rollouts[0] for g in groups}
    assert {r.status.value for r in rows.values()} == {"ok"}
    big = rows["t0"]
    tool_msg = next(m for m in json.loads(big.messages_json) if m["role"] == "tool")
    assert tool_msg["content"].endswith("[gym_ray: output truncated to 16384 of 10000000 characters]")
    assert json.loads(big.metrics_json)["tool_outputs_truncated"] == 1
    assert len(big.messages_json) < 100_000 and len(big.response_token_ids) < 20_000
    assert "tool_outputs_truncated" not in json.loads(rows["t1"].metrics_json)
