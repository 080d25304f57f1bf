"""Orchestration overhead: how many rollouts/s the collection machinery sustains when the model is free.

Workload (NeMo Gym's simple agent + single-tool-call environment, same shape): the scripted instant
policy, the `weather` environment; per rollout 2 model calls, 1 tool call and a verify. 2,000 rollouts
(500 tasks x 4) at each concurrency. Prints rollouts/s, p50/p99 episode latency and CPU ms per rollout
(all processes of the private Ray cluster, driver included).

    .venv/bin/python benchmarks/orchestration.py [--rollouts 2000] [--concurrency 16 64 256]
        [--policy serve|local] [--transport grpc|default] [--env local|serve] [--agents 2]

`--policy serve` (default) calls the scripted policy through its Serve deployment (the path a vLLM policy
takes); `--policy local` answers inside the agent actor (the machinery alone). NeMo Gym 0.4.0, same
machine kind: 53 / 59 / 48 rollouts/s at concurrency 16 / 64 / 256, 30-38 ms CPU per rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NEMO_GYM = {16: 53, 64: 59, 256: 48}
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul", "Sydney",
          "Nairobi", "Madrid", "Boston", "Dublin", "Hanoi", "Berlin", "Austin", "Accra", "Kyiv", "Perth"]


def make_tasks(n: int):
    from gym_ray.types import Task

    system = ("You are a helpful assistant. Use the get_weather tool, then answer in one sentence with the "
              "condition and the temperature.")
    return [Task(task_id=f"w{i}", env="weather",
                 prompt=[{"role": "system", "content": system},
                         {"role": "user", "content": f"What's the weather like in {CITIES[i % len(CITIES)]}?"}],
                 verifier_metadata={"city": CITIES[i % len(CITIES)]})
            for i in range(n)]


def cluster_cpu_seconds() -> float:
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def build_config(args, concurrency: int):
    from gym_ray.config import validate_config

    return validate_config({
        "model": {"kind": "scripted", "name": "policy", "script": "benchmarks.weather_script:reply",
                  "chat_template": "chatml_tools", "hosting": "local" if args.policy == "local" else "serve",
                  "handle_transport": args.transport},
        "envs": {"weather": {"server": "gym_ray.environments.weather.server:Weather", "hosting": args.env,
                             "agent": {"max_turns": 4}}},
        "collect": {"num_repeats": 4, "concurrency": concurrency, "num_agents": args.agents,
                    "episode_timeout_s": 120, "sampling": {"max_tokens": 64}},
    })


async def measure(collector, tasks) -> dict:
    groups = collector.plan(tasks)
    latencies, statuses, rewards = [], {}, []
    cpu0, t0 = cluster_cpu_seconds(), time.perf_counter()
    async for table in collector.stream_tables(groups):
        for st, m, r in zip(table["status"].to_pylist(), table["metrics_json"].to_pylist(),
                            table["reward"].to_pylist(), strict=True):
            statuses[st] = statuses.get(st, 0) + 1
            rewards.append(r)
            total = json.loads(m).get("total_s")
            if total is not None:
                latencies.append(total)
    wall, cpu = time.perf_counter() - t0, cluster_cpu_seconds() - cpu0
    n = sum(statuses.values())
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rollouts": n, "wall_s": wall, "rps": n / wall, "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
            "cpu_ms": cpu / n * 1e3, "statuses": statuses, "mean_reward": sum(rewards) / max(n, 1)}


def core_speed_s() -> float:
    """Seconds for a fixed pure-Python loop: shared 2-core VMs vary by 2-3x from hour to hour, so a table
    is only comparable with another taken at a similar core speed."""
    t0 = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rollouts", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--policy", choices=["serve", "local"], default="serve")
    ap.add_argument("--env", choices=["local", "serve"], default="local")
    ap.add_argument("--transport", choices=["default", "grpc"], default="grpc",
                    help="Serve handle transport of the policy calls (with --policy serve)")
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from gym_ray.collect.api import Collector
    from gym_ray.collect.deploy import deploy_all, teardown

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    print(f"workload: weather, scripted policy ({args.policy}), env {args.env}, {args.agents} agent actors, "
          f"{args.rollouts} rollouts per row; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"core speed: 10M Python adds in {core_speed_s():.2f} s")
    rows = []
    base_cfg = build_config(args, 16)
    dep = deploy_all(base_cfg, http=False) if args.policy == "serve" or args.env == "serve" else None
    try:
        for c in args.concurrency:
            cfg = build_config(args, c)
            with Collector(cfg, apps=dict(dep.apps) if dep else {}) as col:
                asyncio.run(col.start())
                asyncio.run(measure(col, make_tasks(max(args.warmup // 4, 1))))
                r = asyncio.run(measure(col, make_tasks(args.rollouts // 4)))
            rows.append((c, r))
            print(f"  c={c}: {r['rps']:.0f} rollouts/s, statuses {r['statuses']}, mean reward {r['mean_reward']:.2f}",
                  flush=True)
    finally:
        if dep:
            teardown(dep)
        ray.shutdown()
    print(f"\n{'concurrency':>11}  {'rollouts/s':>10}  {'p50 ms':>8}  {'p99 ms':>8}  {'CPU ms/rollout':>14}  "
          f"{'NeMo Gym /s':>11}  {'ratio':>5}")
    for c, r in rows:
        ng = NEMO_GYM.get(c)
        ratio = f"{r['rps'] / ng:.1f}x" if ng else "-"
        print(f"{c:>11}  {r['rps']:>10.0f}  {r['p50_ms']:>8.1f}  {r['p99_ms']:>8.1f}  {r['cpu_ms']:>14.1f}  "
              f"{ng or '-':>11}  {ratio:>5}")


if __name__ == "__main__":
    main()
