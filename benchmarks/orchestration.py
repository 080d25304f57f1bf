"""Orchestration overhead: how many rollouts/s the collection machinery sustains when the model is free.

Workload (NeMo Gym's simple agent + single-tool-call environment, same shape): the scripted instant
policy, the `weather` environment; per rollout 2 model calls, 1 tool call and a verify. 2,000 rollouts
(500 tasks x 4) at each concurrency. Prints, per environment hosting and concurrency, rollouts/s,
p50/p99 episode latency, CPU ms per rollout (all processes of the private Ray cluster, driver
included: less sensitive to a shared machine's load than rollouts/s) and the load average meanwhile.

    .venv/bin/python benchmarks/orchestration.py [--rollouts 2000] [--concurrency 16 64 256]
        [--env local serve replicas] [--env-replicas 2] [--policy serve|local]
        [--transport grpc|default] [--agents 2] [--monitors]

`--env local`: the env inside each agent actor; `serve`: one Serve replica; `replicas`: `--env-replicas`
Serve replicas with session affinity. `--policy serve` (default) calls the scripted policy through its
Serve deployment (the path a vLLM policy takes); `--policy local` answers inside the agent actor (the
machinery alone). `--concurrency 10000 --rollouts 20000` is the 10,000-episodes-in-flight check; the
table's last column is the cluster's peak memory (PSS). NeMo Gym 0.7.0 on this machine, c=64: 67
rollouts/s, 26.8 CPU ms per rollout (0.4.0: 53 / 59 / 48 rollouts/s at c=16 / 64 / 256); the ratio column
divides by 67. The machine's speed drifts by 2x from hour to hour: for a ratio, run
`benchmarks/nemogym_baseline.py` (NeMo Gym's own collector on the same workload) before and after this.

`--baseline REF`: the cost of this code's per-rollout cost accounting (or any change): the first `--env` at the
first `--concurrency` measured in fresh processes, alternately on git commit REF and on `--against REF2`
(default: this working tree), each exported to a temporary directory, `--repeats` times each; prints CPU ms per rollout of each run and the
difference of the medians.

`--monitors`: each row is measured four times on the same collector, the online monitors off, on, off, on
(all six, the cross-check re-verifying 10% of episodes with the weather verifier); the rows say `+mon`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NEMO_GYM_07 = {"rps": 67, "cpu_ms": 26.8}  # c=64, same machine, quiet (nemogym_baseline.py)
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


def cluster_processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def cluster_cpu_seconds() -> float:
    total = 0.0
    for p in cluster_processes():
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def cluster_memory_bytes() -> int:
    """PSS of every cluster process: shared pages (the object store, libraries) counted once overall."""
    total = 0
    for p in cluster_processes():
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class PeakMemory:
    """Samples the cluster's memory every `interval_s` in a thread while a row runs."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, cluster_memory_bytes())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def build_config(args, env_mode: str, concurrency: int):
    from gym_ray.config import validate_config

    return validate_config({
        "model": {"kind": "scripted", "name": "policy", "script": "benchmarks.weather_script:reply",
                  "chat_template": "chatml_tools", "hosting": "local" if args.policy == "local" else "serve",
                  "handle_transport": args.transport},
        "envs": {"weather": {"server": "gym_ray_env_weather.server:Weather",
                             "hosting": "local" if env_mode == "local" else "serve",
                             "num_replicas": args.env_replicas if env_mode == "replicas" else 1,
                             "agent": {"max_turns": 4}}},
        "collect": {"num_repeats": 4, "concurrency": concurrency, "num_agents": args.agents,
                    "episode_timeout_s": 120, "sampling": {"max_tokens": 64}},
    })


async def measure(collector, tasks) -> dict:
    groups = collector.plan(tasks)
    latencies, statuses, rewards = [], {}, []
    load0 = os.getloadavg()[0]
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
            "cpu_ms": cpu / n * 1e3, "statuses": statuses, "mean_reward": sum(rewards) / max(n, 1),
            "load": (load0 + os.getloadavg()[0]) / 2}


def core_speed_s() -> float:
    """Seconds for a fixed pure-Python loop: shared 2-core VMs vary by 2-3x from hour to hour, so a table
    is only comparable with another taken at a similar core speed."""
    t0 = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - t0


# every detector, at its defaults; the cross-check re-scores a tenth of the episodes with the env's own verifier
ALL_MONITORS = {"zero_variance": {}, "mode_collapse": {}, "grader_addressing": {}, "tool_loop": {}, "length": {},
                "cross_check": {"server": "gym_ray_env_weather.server:Weather", "sample": 0.1}}


def run_rows(args, env_mode: str) -> list[tuple[int, dict]]:
    """Deploy what `env_mode` puts on Serve, then measure each concurrency on the same deployment."""
    from gym_ray.collect.api import Collector
    from gym_ray.config import MonitorsConfig
    from gym_ray.launch.deploy import deploy_all, teardown
    from gym_ray.monitors import MonitorRunner

    rows = []
    on_serve = args.policy == "serve" or env_mode != "local"
    dep = deploy_all(build_config(args, env_mode, 16), http=False) if on_serve else None
    try:
        for c in args.concurrency:
            cfg = build_config(args, env_mode, c)
            with Collector(cfg, apps=dict(dep.apps) if dep else {}) as col:
                asyncio.run(col.start())
                asyncio.run(measure(col, make_tasks(max(args.warmup // 4, 1))))
                for on in [False, True, False, True] if args.monitors else [False]:
                    col.monitors = (MonitorRunner(MonitorsConfig.model_validate(ALL_MONITORS), cfg.envs)
                                    if on else None)
                    with PeakMemory() as mem:
                        r = asyncio.run(measure(col, make_tasks(args.rollouts // 4)))
                    r["peak_gb"], r["monitors"] = mem.peak / 2**30, on
                    rows.append((c, r))
                    print(f"  env {env_mode}, c={c}{' +mon' if on else ''}: {r['rps']:.0f} rollouts/s, "
                          f"{r['cpu_ms']:.1f} CPU ms/rollout, load {r['load']:.1f}, statuses {r['statuses']}, "
                          f"mean reward {r['mean_reward']:.2f}", flush=True)
    finally:
        if dep:
            teardown(dep)
    return rows


def against_baseline(args) -> None:
    """Run this script's single row in fresh processes, alternating commit `args.baseline` and `args.against`."""
    import re
    import subprocess
    import tempfile

    row = ["--env", args.env[0], "--concurrency", str(args.concurrency[0]), "--rollouts", str(args.rollouts),
           "--warmup", str(args.warmup), "--policy", args.policy, "--agents", str(args.agents)]
    line = re.compile(r"c=\d+: (\d+) rollouts/s, ([\d.]+) CPU ms/rollout")
    now = args.against or "this tree"
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for ref in filter(None, (args.baseline, args.against)):
            roots[ref] = Path(tmp) / ref
            roots[ref].mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(roots[ref])], input=archive, check=True)
        runs = []
        for i in range(args.repeats):
            for label, root in ((args.baseline, roots[args.baseline]), (now, roots.get(args.against, ROOT))):
                out = subprocess.run([sys.executable, str(root / "benchmarks" / "orchestration.py"), *row],
                                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
                found = line.search(out.stdout)
                if not found:
                    raise SystemExit(f"{label}: no result line\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
                runs.append((label, i, int(found[1]), float(found[2])))
                print(f"  {label}, run {i + 1}: {found[1]} rollouts/s, {found[2]} CPU ms/rollout", flush=True)
    print(f"\nenv {args.env[0]}, policy {args.policy}, c={args.concurrency[0]}, {args.rollouts} rollouts per run")
    print(f"{'code':>12}  {'run':>3}  {'rollouts/s':>10}  {'CPU ms/rollout':>14}")
    for label, i, rps, cpu in runs:
        print(f"{label:>12}  {i + 1:>3}  {rps:>10}  {cpu:>14.1f}")
    before = statistics.median(c for lb, _, _, c in runs if lb == args.baseline)
    after = statistics.median(c for lb, _, _, c in runs if lb == now)
    print(f"median CPU ms/rollout: {before:.1f} before, {after:.1f} now ({(after / before - 1) * 100:+.1f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rollouts", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--policy", choices=["serve", "local"], default="serve")
    ap.add_argument("--env", choices=["local", "serve", "replicas"], nargs="+", default=["local", "serve", "replicas"])
    ap.add_argument("--env-replicas", type=int, default=2)
    ap.add_argument("--transport", choices=["default", "grpc"], default="grpc",
                    help="Serve handle transport of the policy calls (with --policy serve)")
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--monitors", action="store_true", help="measure each row with the online monitors off and on")
    ap.add_argument("--serve-throughput-optimized", action="store_true",
                    help="Ray Serve's own throughput mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=1: router and user code "
                         "on the main event loop, buffered access logs; in a run config: ray.env_vars)")
    ap.add_argument("--baseline", metavar="REF", help="compare CPU per rollout with git commit REF (see above)")
    ap.add_argument("--against", metavar="REF2", help="with --baseline: the commit to compare (default: this tree)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each code with --baseline")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before Ray is imported (here or in a --baseline run)
    if args.baseline:
        return against_baseline(args)
    if args.serve_throughput_optimized:  # before the local cluster starts: every process inherits it
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    print(f"workload: weather, scripted policy ({args.policy}), {args.agents} agent actors, {args.rollouts} "
          f"rollouts per row{', Serve throughput-optimized' if args.serve_throughput_optimized else ''}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"core speed: 10M Python adds in {core_speed_s():.2f} s")
    table = []
    try:
        for env_mode in args.env:
            table += [(env_mode, c, r) for c, r in run_rows(args, env_mode)]
    finally:
        ray.shutdown()
    print(f"\n{'env':>12}  {'conc.':>5}  {'rollouts/s':>10}  {'p50 ms':>8}  {'p99 ms':>8}  {'CPU ms/rollout':>14}  "
          f"{'load':>5}  {'peak GB':>7}  {'vs NeMo Gym 0.7 /s':>18}  {'status':>6}")
    for env_mode, c, r in table:
        label = f"serve x{args.env_replicas}" if env_mode == "replicas" else env_mode
        label += " +mon" if r.get("monitors") else ""
        ok = "ok" if set(r["statuses"]) == {"ok"} and r["mean_reward"] == 1.0 else "FAIL"
        print(f"{label:>12}  {c:>5}  {r['rps']:>10.0f}  {r['p50_ms']:>8.1f}  {r['p99_ms']:>8.1f}  "
              f"{r['cpu_ms']:>14.1f}  {r['load']:>5.1f}  {r['peak_gb']:>7.2f}  "
              f"{r['rps'] / NEMO_GYM_07['rps']:>17.1f}x  {ok:>6}")


if __name__ == "__main__":
    main()
