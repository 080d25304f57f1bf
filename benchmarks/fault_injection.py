"""Fault injection: kill one part mid-run and count what the rows say afterwards.

Workload: the `weather` environment and a scripted policy that always solves it (benchmarks/
weather_script.py), so an `ok` row with a reward other than 1.0 is mis-scored. Per fault,
`--tasks` x `--repeats` episodes (default 500 x 4 = 2,000), concurrency 64 over 2 agent actors; the fault
lands once `--kill-at` of the rows have arrived:

- `actor`:  SIGKILL the process of an agent actor while its episodes wait for their generations (Ray
            restarts it; the scheduler re-dispatches its unfinished groups). Policy and env in-process.
- `env`:    SIGKILL the weather Serve replica (policy in-process). Generation is held first, so every
            episode in flight makes its next env call on the fresh replica, which never saw its session.
- `policy`: SIGKILL the scripted policy's Serve replica (`model.hosting: serve`, gRPC handles) while
            every episode in flight waits inside it for its generation. Env in-process.
- `driver`: `gym-ray run` in a subprocess (its own private Ray), SIGKILLed with its process group once
            part files hold `--kill-at` of the rows, then `gym-ray run --resume` on the same output_dir.

Columns: expected rows, present (distinct (task_id, rollout_index) found), duplicated (rows beyond one
per key), mis-scored (`ok` rows with reward != 1 or masked, or showing "no session"; failed rows not
masked or without failure stage/kind), failed (masked failure rows, e.g. `infra_error` once retries ran
out), retried (rows with attempt >= 1, + groups re-dispatched by the scheduler or re-run by --resume),
lost (expected - present). Every row must be present once and honest; losses must be 0.

    .venv/bin/python benchmarks/fault_injection.py [--faults actor env policy driver] [--tasks 500]
        [--repeats 4] [--concurrency 64] [--agents 2] [--kill-at 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GATE_ENV = "GYM_RAY_FAULT_GATE"
FAULTS = {
    "actor": "kill an agent actor",
    "env": "kill the env replica (weather on Serve)",
    "policy": "kill the policy replica (scripted on Serve)",
    "driver": "kill the driver (gym-ray run), --resume",
}
COLUMNS = ["task_id", "rollout_index", "status", "reward", "mask_sample", "failure_stage", "failure_kind",
           "attempt", "messages_json", "segment_index", "num_segments"]


async def gated_reply(prompt_text: str, turn: int):
    """benchmarks/weather_script.py's reply, held while the file named by $GYM_RAY_FAULT_GATE exists."""
    from benchmarks.weather_script import reply

    gate = os.environ.get(GATE_ENV)
    while gate and os.path.exists(gate):
        await asyncio.sleep(0.05)
    return reply(prompt_text, turn)


def make_tasks(n: int):
    from benchmarks.orchestration import make_tasks as weather_tasks

    return weather_tasks(n)


def audit(rows: list[dict], expected: set[tuple[str, int]]) -> dict:
    keys = Counter((r["task_id"], r["rollout_index"]) for r in rows if r["segment_index"] == 0)
    misscored = 0
    for r in rows:
        if r["status"] == "ok":
            misscored += r["reward"] != 1.0 or r["mask_sample"] or "no session" in (r["messages_json"] or "")
        else:
            misscored += not (r["mask_sample"] and r["failure_stage"] and r["failure_kind"])
    return {
        "expected": len(expected), "present": len(set(keys) & expected),
        "duplicated": sum(n - 1 for n in keys.values() if n > 1) + len(set(keys) - expected),
        "misscored": misscored, "failed": sum(r["status"] != "ok" for r in rows),
        "retried_rows": sum(r["attempt"] >= 1 for r in rows), "lost": len(expected - set(keys)),
        "statuses": dict(Counter(r["status"] for r in rows)),
        "failures": dict(Counter(f"{r['status']}/{r['failure_stage']}/{r['failure_kind']}"
                                 for r in rows if r["status"] != "ok")),
    }


# --- in-process faults (one private Ray cluster) -----------------------------------------------------
def run_config(args, policy: str, env: str):
    from gym_ray.config import validate_config

    return validate_config({
        "model": {"kind": "scripted", "name": "policy", "script": "benchmarks.fault_injection:gated_reply",
                  "chat_template": "chatml_tools", "hosting": policy},
        "envs": {"weather": {"server": "gym_ray_env_weather.server:Weather", "hosting": env,
                             "agent": {"max_turns": 4}}},
        "collect": {"num_repeats": args.repeats, "concurrency": args.concurrency, "num_agents": args.agents,
                    "max_retries": 2, "episode_timeout_s": 300, "sampling": {"max_tokens": 64}},
    })


def replica(app: str) -> tuple[str, int]:
    """Name and PID of the (one) live Serve replica of app `app`."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{app}#")]
    if not names:
        raise RuntimeError(f"no replica of {app!r} is running")
    actor = ray.get_actor(names[0], namespace="serve")
    return names[0], ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def wait_for_fresh_replica(app: str, old: str, timeout_s: float = 300.0) -> float:
    """Seconds until a replica other than `old` runs and Serve reports the app RUNNING."""
    import ray
    from ray import serve

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{app}#")]
        status = serve.status().applications.get(app)
        if any(n != old for n in names) and status is not None and status.status == "RUNNING":
            return time.monotonic() - t0
        time.sleep(0.25)
    raise TimeoutError(f"no fresh replica of {app!r} after {timeout_s:g} s")


async def faulted_run(col, groups, kill_at_rows: int, fault) -> tuple[list[dict], dict]:
    """Stream every group; once `kill_at_rows` rows are in, run the coroutine `fault(info)` alongside."""
    rows, info, task = [], {}, None
    t0 = time.monotonic()
    async for table in col.stream_tables(groups):
        rows.extend(table.select(COLUMNS).to_pylist())
        if task is None and len(rows) >= kill_at_rows:
            info["rows_before_fault"] = len(rows)
            task = asyncio.create_task(fault(info))
    if task is not None:
        await task
    info["wall_s"] = time.monotonic() - t0
    return rows, info


def in_process_fault(kind: str, args, apps: dict[str, str], gate: Path) -> dict:
    from gym_ray.collect.api import Collector

    policy_host = "serve" if kind == "policy" else "local"
    env_host = "serve" if kind == "env" else "local"
    cfg = run_config(args, policy_host, env_host)
    use = {k: v for k, v in apps.items() if (k == "policy" and policy_host == "serve")
           or (k == "weather" and env_host == "serve")}
    tasks = make_tasks(args.tasks)
    expected = {(t.task_id, k) for t in tasks for k in range(args.repeats)}
    kill_at = max(1, int(args.kill_at * len(expected)))

    with Collector(cfg, apps=use) as col:
        asyncio.run(col.start())
        groups = col.plan(tasks)
        if kind == "actor":
            import ray

            victim = col.scheduler.actors[0]
            pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()), timeout=60)

            async def fault(info):
                gate.touch()  # hold generation: the victim surely has episodes in flight, not just done chunks
                await asyncio.sleep(1.0)
                os.kill(pid, signal.SIGKILL)
                info["killed"] = f"agent actor pid {pid}"
                gate.unlink()
        else:
            app = use["policy" if kind == "policy" else "weather"]
            name, pid = replica(app)

            async def fault(info):
                gate.touch()  # hold generation: episodes wait between env calls (env) / inside the replica (policy)
                await asyncio.sleep(1.0)
                os.kill(pid, signal.SIGKILL)
                info["killed"] = f"{name} pid {pid}"
                if kind == "env":  # the fresh replica must be up before anyone calls it again
                    info["restart_s"] = await asyncio.to_thread(wait_for_fresh_replica, app, name)
                    await asyncio.sleep(1.0)
                gate.unlink()
                if kind == "policy":
                    info["restart_s"] = await asyncio.to_thread(wait_for_fresh_replica, app, name)

        try:
            rows, info = asyncio.run(faulted_run(col, groups, kill_at, fault))
        finally:
            gate.unlink(missing_ok=True)
        info["regrouped"] = col.scheduler.regrouped
    return {"fault": FAULTS[kind], **audit(rows, expected), **info}


# --- the driver: gym-ray run in a subprocess ------------------------------------------------------------
def _rows_on_disk(out: Path) -> int:
    import pyarrow.parquet as pq

    from gym_ray.rundir import part_files

    total = 0
    for p in part_files(out):
        try:
            total += pq.read_metadata(p).num_rows
        except OSError:  # renamed away meanwhile; counted next time
            pass
    return total


def driver_fault(args, workdir: Path) -> dict:
    from gym_ray.rundir import read_rollout_table

    tasks = make_tasks(args.tasks)
    data = workdir / "tasks.jsonl"
    data.write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    out = workdir / "run"
    config = workdir / "run.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model": {"kind": "scripted", "name": "policy", "script": "benchmarks.weather_script:reply",
                  "chat_template": "chatml_tools", "hosting": "local"},
        "envs": {"weather": {"server": "gym_ray_env_weather.server:Weather", "hosting": "local",
                             "data": [str(data)], "agent": {"max_turns": 4}}},
        "collect": {"output_dir": str(out), "num_repeats": args.repeats, "concurrency": args.concurrency,
                    "num_agents": args.agents, "rows_per_file": 64, "roll_seconds": 1.0,
                    "sampling": {"max_tokens": 64}},
        "ray": {"num_cpus": 2},
    }, indent=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
           "RAY_raylet_start_wait_time_s": "180"}
    env.pop(GATE_ENV, None)
    cli = str(Path(sys.executable).with_name("gym-ray"))
    expected = {(t.task_id, k) for t in tasks for k in range(args.repeats)}
    kill_at = max(1, int(args.kill_at * len(expected)))

    t0 = time.monotonic()
    with open(workdir / "first.log", "wb") as log:
        proc = subprocess.Popen([cli, "run", str(config)], cwd=ROOT, env=env, stdout=log, stderr=log,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 900
            while (before := _rows_on_disk(out)) < kill_at:
                if proc.poll() is not None:
                    raise RuntimeError(f"gym-ray run ended (rc {proc.returncode}) before the kill; "
                                       f"see {workdir / 'first.log'}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gym-ray run wrote only {before} rows in 900 s")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # a crash: no flush, no teardown, its Ray with it
            proc.wait()
    before = _rows_on_disk(out)
    resumed = subprocess.run([cli, "run", str(config), "--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=1800)
    (workdir / "resume.log").write_text(resumed.stdout + resumed.stderr)
    if resumed.returncode != 0:
        raise RuntimeError(f"gym-ray run --resume failed (rc {resumed.returncode}): {resumed.stderr[-2000:]}")
    line = next((ln for ln in resumed.stdout.splitlines() if ln.startswith("resuming")), "")
    done, _, total = line.partition(": ")[2].partition(" groups")[0].partition(" of ")
    rows = read_rollout_table(out, COLUMNS).to_pylist()
    info = {"rows_before_fault": before, "killed": f"gym-ray run pid {proc.pid} (process group)",
            "regrouped": int(total) - int(done) if done.isdigit() and total.isdigit() else -1,
            "wall_s": time.monotonic() - t0, "resume_line": line}
    return {"fault": FAULTS["driver"], **audit(rows, expected), **info}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--kill-at", type=float, default=0.25, help="fraction of the rows in before the kill")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    workdir = Path(tempfile.mkdtemp(prefix="gym_ray_faults_"))
    gate = workdir / "gate"
    os.environ[GATE_ENV] = str(gate)
    print(f"workload: weather, scripted policy that always solves it, {args.tasks} tasks x {args.repeats}, "
          f"concurrency {args.concurrency}, {args.agents} agent actors, kill after {args.kill_at:.0%} of the "
          f"rows; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; work dir {workdir}",
          flush=True)
    results = []
    if "driver" in args.faults:  # first, while no other Ray of ours runs
        results.append(driver_fault(args, workdir))
        print(f"  {results[-1]}", flush=True)
    inner = [f for f in args.faults if f != "driver"]
    if inner:
        import ray
        from ray import serve

        from gym_ray.launch.deploy import deploy_all, teardown

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), GATE_ENV: str(gate)}})
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        dep = None
        try:
            hosted = run_config(args, "serve" if "policy" in inner else "local",
                                "serve" if "env" in inner else "local")
            dep = deploy_all(hosted, http=False)
            for kind in inner:
                results.append(in_process_fault(kind, args, dict(dep.apps), gate))
                print(f"  {results[-1]}", flush=True)
        finally:
            if dep is not None:
                teardown(dep)
            ray.shutdown()

    head = ["fault", "expected", "present", "duplicated", "mis-scored", "failed", "retried (rows + groups)",
            "lost", "wall s"]
    table = [[r["fault"], r["expected"], r["present"], r["duplicated"], r["misscored"], r["failed"],
              f"{r['retried_rows']} + {r['regrouped']} groups", r["lost"], f"{r['wall_s']:.0f}"] for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table, strict=True)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                                for i, (x, w) in enumerate(zip(row, widths, strict=True))) + " |")
    bad = [r["fault"] for r in results if r["lost"] or r["duplicated"] or r["misscored"]]
    print(f"\nlosses, duplicates, mis-scored rows: {'none' if not bad else 'in ' + ', '.join(bad)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
