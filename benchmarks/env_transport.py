"""What one environment call costs through each EnvClient transport (prints a table).

An async caller actor (num_cpus=0, like an agent actor) runs weather-shaped episodes
(seed_session, one tool call, verify, close_session = 4 env calls) with N episodes in flight,
through: the in-process client, a Serve handle over gRPC (`_by_reference=False`, our default),
and a default by-reference Serve handle. Run: .venv/bin/python benchmarks/env_transport.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from gym_ray.config import EnvConfig  # noqa: E402
from gym_ray.resources.client import make_env_client  # noqa: E402
from gym_ray.resources.serve import HandleEnvClient, deploy_env  # noqa: E402
from gym_ray.types import Message, Task, ToolCall  # noqa: E402

CFG = EnvConfig(server="gym_ray_env_weather.server:Weather")


@ray.remote(num_cpus=0)
class Caller:
    def __init__(self, client):
        self.client = client

    async def run(self, episodes: int, concurrency: int) -> float:
        sem = asyncio.Semaphore(concurrency)
        msgs = [Message(role="assistant", content="It is sunny, 20 °C.")]

        async def one(i: int) -> None:
            async with sem:
                sid = f"e{i}"
                t = Task(task_id=sid, env="weather", prompt=msgs, verifier_metadata={"city": "Paris"})
                await self.client.seed_session(sid, t)
                await self.client.call_tool(sid, ToolCall(name="get_weather", arguments={"city": "Paris"}))
                await self.client.verify(sid, t, msgs)
                await self.client.close_session(sid)

        await asyncio.gather(*(one(i) for i in range(min(200, episodes))))  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(episodes)))
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    args = p.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = deploy_env("weather", CFG, route_prefix="/weather")
    clients = {
        "in-process (LocalEnvClient)": make_env_client("weather", CFG),
        "Serve handle, gRPC (_by_reference=False, default)": HandleEnvClient(app),
        "Serve handle, by reference (Serve default)": HandleEnvClient(app, by_reference=True),
    }
    print(
        f"\n{args.episodes} weather episodes x 4 env calls; episodes/s and env calls/s (caller actor, 2 CPUs)\n"
    )
    header = "| transport | " + " | ".join(f"c={c}" for c in args.concurrency) + " |"
    print(header)
    print("|---|" + "---|" * len(args.concurrency))
    for label, client in clients.items():
        caller = Caller.remote(client)
        cells = []
        for c in args.concurrency:
            secs = ray.get(caller.run.remote(args.episodes, c))
            eps = args.episodes / secs
            cells.append(f"{eps:,.0f} ep/s ({4 * eps:,.0f} calls/s)")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        ray.kill(caller)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
