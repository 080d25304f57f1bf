"""Serve's own autoscaler on an environment deployment: up under thousands of episodes, down after.

Replica counts are read from `serve.status()`. Calls reach the replicas coalesced (`gym_ray.serving.batch`), so the
autoscaler sees batches as requests; every episode must end with its own right reward: a session stays on
the replica that seeded it (`routing.PinnedRouter`), so a scale-up moves none (a hash ring would move some,
and their episodes would meet `SessionLostError`).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from ray import serve

from gym_ray.config import AutoscalingConfig, EnvConfig
from gym_ray.resources.client import make_env_client
from gym_ray.resources.runtime import SessionLostError
from gym_ray.resources.serve import deploy_env
from gym_ray.types import Message, Task, ToolCall

pytestmark = pytest.mark.slow
TICKS = 3


def running_replicas(app: str) -> int:
    deployment = serve.status().applications[app].deployments[app]
    return deployment.replica_states.get("RUNNING", 0)


def wait_for(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.25)  # serve.status() is one controller call
    return time.monotonic() - start


def test_env_deployment_scales_up_under_load_and_down_after(serve_http_port):
    auto = AutoscalingConfig(min_replicas=1, max_replicas=3, target_ongoing_requests=2,
                             upscale_delay_s=1, downscale_delay_s=3)
    cfg = EnvConfig(server="gym_ray_env_counter.server:Counter", autoscaling=auto)
    app = deploy_env("counter_auto", cfg, route_prefix="/counter_auto")
    client = make_env_client("counter_auto", cfg, app_name=app)
    assert client.sticky  # an autoscaled env keeps each session on one replica
    outcomes: dict[str, int] = {"ok": 0, "session_lost": 0}
    peak = 1

    async def episode(i: int) -> None:
        sid = f"s{i}"
        task = Task(task_id=sid, env="counter", prompt=[Message(role="user", content="count")],
                    verifier_metadata={"initial_count": 0, "expected_count": TICKS})
        try:
            await client.seed_session(sid, task)
            for _ in range(TICKS):
                out = await client.call_tool(sid, ToolCall(name="increment", arguments={}))
                assert not out.startswith("Error"), out
            result = await client.verify(sid, task, [])
            await client.close_session(sid)
        except SessionLostError:  # counted, so the assertion names the failure
            outcomes["session_lost"] += 1
            return
        assert result.reward == 1.0, (sid, result)
        outcomes["ok"] += 1

    async def load() -> None:
        nonlocal peak
        start, wave = time.monotonic(), 0
        while peak < 2 and time.monotonic() - start < 180:
            await asyncio.gather(*(episode(wave * 2000 + i) for i in range(2000)))
            wave += 1
            peak = max(peak, await asyncio.to_thread(running_replicas, app))

    try:
        assert running_replicas(app) == 1
        asyncio.run(load())
        assert peak >= 2, "no scale-up under 2,000 episodes in flight"
        assert outcomes == {"ok": outcomes["ok"], "session_lost": 0}, "a scale-up moved live sessions"
        wait_for(lambda: running_replicas(app) == 1, 180, "no scale-down to 1 replica after the load")
    finally:
        serve.delete(app)
