"""Cluster overhead: the orchestration workload on a two-node Ray cluster against one node, on this machine.

Both "nodes" share this machine's cores, so this measures what spreading over nodes costs (cross-node
actor calls, a second raylet and object store, result tables shipped between nodes), not a speed-up. The
cluster is the tests' (`tests/cluster/two_node_ray.py`: `ray start --head --block` + `ray start --address`,
token auth on, own ports and temp dir, stopped by PID). Workload: `benchmarks/orchestration.py`'s shape:
the scripted instant policy and `weather`, both `hosting: local` in the agent actors, `--agents` agent
actors (placed round the nodes), `--concurrency` episodes in flight, `--tasks` x 4 rollouts, driven by
`gym-ray run --address` (its own process, a Ray driver on the head). Rollouts/s is over the collection
itself (`run.seconds_this_session` of the run's metrics.json), not the driver's start.

    .venv/bin/python benchmarks/cluster.py [--tasks 500] [--concurrency 64] [--agents 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "cluster"), str(ROOT / "tests")]

from cluster_scripts import write_run_config  # noqa: E402
from two_node_ray import GYM_RAY, TwoNodeCluster  # noqa: E402


def measure(cluster: TwoNodeCluster, root: Path, name: str, args) -> dict:
    cfg = write_run_config(root, name, args.tasks, num_agents=args.agents, concurrency=args.concurrency,
                           rows_per_file=512)
    load0 = os.getloadavg()[0]
    r = cluster.run([GYM_RAY, "run", str(cfg), "--address", cluster.address], timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{name}: gym-ray run failed:\n{r.stderr[-3000:]}")
    m = json.loads((root / name / ".gym_ray" / "metrics.json").read_text())
    run = m["run"]
    return {"rollouts": m["overall"]["rollouts"], "ok": m["overall"]["statuses"].get("ok", 0),
            "reward": m["overall"]["mean_reward"], "s": run["seconds_this_session"],
            "rps": run["episodes_this_session"] / run["seconds_this_session"],
            "load": (load0 + os.getloadavg()[0]) / 2}


def bench(nodes: int, args) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="grbench-"))
    cluster = TwoNodeCluster(root)
    try:
        cluster.start_head()
        if nodes == 2:
            cluster.start_worker()
        return [measure(cluster, root, f"n{nodes}-{i}", args) for i in range(args.repeats)]
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=500, help="tasks per row (x 4 rollouts each)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--agents", type=int, default=2, help="agent actors (placed round the nodes)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per topology")
    args = ap.parse_args()
    print(f"workload: weather, scripted instant policy, envs in the agent actors, {args.agents} agent actors, "
          f"c={args.concurrency}, {args.tasks * 4} rollouts per run; one machine ({os.cpu_count()} cores): "
          "this measures overhead, not speed-up", flush=True)
    rows = [(label, r) for label, n in (("one node (head, 2 CPUs)", 1), ("two nodes (head 2 + worker 1 CPU)", 2))
            for r in bench(n, args)]
    header = f"{'cluster':<34} {'rollouts':>8} {'ok':>6} {'reward':>6} {'wall s':>7} {'rollouts/s':>10} {'load':>5}"
    print(header)
    print("-" * len(header))
    for label, r in rows:
        print(f"{label:<34} {r['rollouts']:>8} {r['ok']:>6} {r['reward']:>6.3f} {r['s']:>7.1f} {r['rps']:>10.1f} "
              f"{r['load']:>5.1f}")


if __name__ == "__main__":
    main()
