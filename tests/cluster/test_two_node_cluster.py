"""gym_ray on a real two-node Ray cluster: agent actors on both nodes, `ray job submit` with
token auth, `ray job stop` + `--resume` (which is also the submit that succeeds), and a node lost mid-run. One cluster for the whole module
(`two_node_ray.py`); every process it starts is stopped by PID at the end.

Placement: `collect.num_agents: 2` and the scheduler's SPREAD strategy put one agent actor on each node;
policy and env are `hosting: local`, so each episode runs where its agent actor runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from cluster_scripts import write_run_config
from ports import free_port
from two_node_ray import GYM_RAY, RAY, ROOT, SERVE, scrape_gym_ray, start_cluster

from gym_ray.collect.telemetry import REWARD_BOUNDARIES
from gym_ray.rundir import RunDir, part_files, read_rollout_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("twonode"))
    yield c
    c.stop()


def rows_by_key(out: Path) -> Counter:
    """(task_id, rollout_index) -> number of episodes (segment 0 rows) in the run's Parquet."""
    t = read_rollout_table(out, ["task_id", "rollout_index", "segment_index"])
    return Counter((r["task_id"], r["rollout_index"]) for r in t.to_pylist() if r["segment_index"] == 0)


def assert_complete(out: Path, num_tasks: int, repeats: int = 4) -> None:
    """Exactly one row per (task, rollout_index), every one `ok` and scored 1.0 by the env's verifier."""
    keys = rows_by_key(out)
    expected = {(f"w{i}", k) for i in range(num_tasks) for k in range(repeats)}
    assert set(keys) == expected, f"missing {sorted(expected - set(keys))[:5]}, extra {sorted(set(keys) - expected)[:5]}"
    assert max(keys.values()) == 1, f"duplicated: {[k for k, n in keys.items() if n > 1][:5]}"
    t = read_rollout_table(out, ["status", "reward", "error"]).to_pylist()
    assert Counter(r["status"] for r in t) == {"ok": num_tasks * repeats}, next(r["error"] for r in t if r["error"])
    assert all(r["reward"] == 1.0 for r in t)


def new_agent_actors(cluster, before: set[str]) -> list[dict]:
    return [a for a in cluster.actors() if a["actor_id"] not in before]


def test_agent_actors_run_on_both_nodes(cluster, tmp_path):
    cfg = write_run_config(tmp_path, "spread", 10)
    before = {a["actor_id"] for a in cluster.actors()}
    r = cluster.run([GYM_RAY, "run", str(cfg), "--address", cluster.address])
    assert r.returncode == 0, r.stderr[-4000:]
    actors = new_agent_actors(cluster, before)
    nodes = cluster.node_ids()
    assert len(actors) == 2
    assert {a["node_id"] for a in actors} == {nodes["node_a"], nodes["node_b"]}
    assert_complete(tmp_path / "spread", 10)
    assert "is a local path on a 2-node cluster" in r.stderr  # the rows are on the driver's machine only
    assert_metrics_match_rows(cluster, tmp_path / "spread")


def assert_metrics_match_rows(cluster, out: Path) -> None:
    """Each node's metrics export port serves gym_ray's metrics (both nodes ran episodes), and their sum
    over the nodes is what the Parquet holds: rollouts by env and status, the reward histogram's count and
    buckets (Ray approximates a histogram's _sum from bucket midpoints, so it is not compared), generated
    tokens. (The in-flight gauge goes with its actor: the s3 test reads it mid-run.)"""
    t = read_rollout_table(out, ["env", "status", "reward", "response_loss_mask", "segment_index"]).to_pylist()
    want = {
        ("ray_gym_ray_rollouts_total", (("env", "weather"), ("status", "ok"))): float(len(t)),
        ("ray_gym_ray_reward_count", (("env", "weather"),)): float(len(t)),
        ("ray_gym_ray_generated_tokens_total", (("env", "weather"),)): float(sum(sum(r["response_loss_mask"])
                                                                                 for r in t)),
    }
    deadline = time.monotonic() + 60
    while True:
        per_node = {name: scrape_gym_ray(port) for name, port in cluster.metrics_ports.items()}
        total: dict = {}
        for samples in per_node.values():
            for k, v in samples.items():
                total[k] = total.get(k, 0.0) + v
        got = {k: total.get(k) for k in want}
        if got == want and all(per_node.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == want
    buckets = {float(dict(k[1])["le"]): v for k, v in total.items() if k[0] == "ray_gym_ray_reward_bucket"}
    rewards = [r["reward"] for r in t]
    assert buckets == {b: float(sum(x <= b for x in rewards)) for b in [*REWARD_BOUNDARIES, float("inf")]}
    assert all(any(k[0] == "ray_gym_ray_rollouts_total" for k in s) for s in per_node.values()), per_node.keys()


def job(cluster, command: str, *args: str, timeout: float = 300):
    """`ray job COMMAND --address ...` against the head's dashboard, with token auth on (the cluster's env
    has RAY_AUTH_MODE=token and the token)."""
    return cluster.run([RAY, "job", command, "--address", cluster.dashboard_url, *args], timeout=timeout)


def job_status(cluster, sid: str) -> str:
    return cluster.api(f"/api/jobs/{sid}")["status"]


def submit(cluster, sid: str, cfg: Path, out: Path, *extra: str, wait: bool = True):
    """The submit command of deploy/README.md, word for word but for the config and the output_dir."""
    return job(cluster, "submit", "--submission-id", sid, *([] if wait else ["--no-wait"]),
               "--working-dir", ".", "--entrypoint-num-cpus", "0",
               "--runtime-env-json", json.dumps({"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}}),
               "--", f"{ROOT}/.venv/bin/gym-ray", "run", str(cfg), f"collect.output_dir={out}", *extra)


def test_ray_job_stop_then_resume(cluster, tmp_path):
    """`ray job submit` as deploy/README.md writes it, stopped mid-run by `ray job stop`; the resumed job
    succeeds and completes the run."""
    # 96 slow episodes two at a time (~40 s): `ray job stop` lands mid-run even on a loaded host
    cfg = write_run_config(tmp_path, "stop", 24, script="cluster_scripts:slow_reply", concurrency=2)
    out = tmp_path / "stop-out"
    r = submit(cluster, "gym-ray-job-stop", cfg, out, wait=False)
    assert r.returncode == 0, r.stderr[-3000:]
    deadline = time.monotonic() + 240
    while (not part_files(out) and time.monotonic() < deadline
           and job_status(cluster, "gym-ray-job-stop") in ("PENDING", "RUNNING")):
        time.sleep(0.5)
    assert part_files(out), job(cluster, "logs", "gym-ray-job-stop").stdout[-3000:]
    r = job(cluster, "stop", "gym-ray-job-stop")
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_status(cluster, "gym-ray-job-stop") == "STOPPED"
    written = rows_by_key(out)
    assert 0 < len(written) < 96 and max(written.values()) == 1  # what was collected stays readable

    r = submit(cluster, "gym-ray-job-resume", cfg, out, "--resume", "collect.concurrency=8")  # not the rows' identity
    assert r.returncode == 0, r.stdout[-4000:]
    assert job_status(cluster, "gym-ray-job-resume") == "SUCCEEDED"
    logs = job(cluster, "logs", "gym-ray-job-resume").stdout
    assert "already written" in logs and "rollouts in" in logs, logs[-3000:]
    assert_complete(out, 24)


def in_flight_gauges(cluster, timeout: float = 20) -> dict:
    """actor -> `ray_gym_ray_rollouts_in_flight` over every node's export port, once an actor has set it."""
    deadline = time.monotonic() + timeout
    while True:
        found = {dict(k[1]).get("actor"): v for port in cluster.metrics_ports.values()
                 for k, v in scrape_gym_ray(port).items() if k[0] == "ray_gym_ray_rollouts_in_flight"}
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


BUCKET = "gym-ray-runs"


@pytest.fixture(scope="module")
def s3_env():
    """A local S3 server (moto) with one bucket; the AWS variables that point pyarrow (and boto3) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def test_s3_output_dir_atomic_parts_resume_and_metrics(cluster, s3_env, tmp_path, monkeypatch):
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)  # this process reads the bucket through pyarrow too
    uri = f"s3://{BUCKET}/runs/s3-run"
    cfg = write_run_config(tmp_path, "s3", 16, script="cluster_scripts:slow_reply", concurrency=4, output_dir=uri)
    env = {**cluster.env, **s3_env}
    argv = [GYM_RAY, "run", str(cfg), "--address", cluster.address]
    log = (tmp_path / "s3.log").open("w")
    run = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not part_files(uri) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run.poll() is None and part_files(uri), (tmp_path / "s3.log").read_text()[-3000:]
        in_flight = in_flight_gauges(cluster)
        assert in_flight and all(0 <= v <= 2 for v in in_flight.values()), in_flight  # 4 episodes over 2 actors
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver dies mid-run, mid-upload perhaps
        run.wait(30)
        log.close()
    partial = rows_by_key(uri)
    assert 0 < len(partial) < 64 and max(partial.values()) == 1
    names = RunDir.of(uri).list_names()  # a part is one upload: nothing half-written or temporary is left
    assert names and all(n.startswith("part-") and n.endswith(".parquet") for n in names), names

    r = cluster.run([*argv, "--resume"], env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"resuming {uri}: " in r.stdout
    assert_complete(uri, 16)
    summary = json.loads(RunDir.of(uri).read_bytes(f"{uri}/.gym_ray/metrics.json"))
    assert summary["overall"]["rollouts"] == 64

    m = cluster.run([GYM_RAY, "metrics", uri], env=env)
    assert m.returncode == 0, m.stderr[-2000:]
    all_line = next(line.split() for line in m.stdout.splitlines() if line.startswith("ALL"))
    assert all_line[1:3] == ["64", "1.000"]  # rollouts, mean reward


def test_serve_deploy_config_then_gym_ray_collect(cluster, tmp_path):
    """`serve deploy` of a Serve config file (deploy/serve_config_scripted.yaml, serve_config.yaml's shape
    with the scripted policy), then `gym-ray collect --address` finds the apps by name and collects."""
    conf = yaml.safe_load((ROOT / "deploy" / "serve_config_scripted.yaml").read_text())
    conf["http_options"]["port"] = free_port()
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(conf))
    r = cluster.run([SERVE, "deploy", str(path), "--address", cluster.dashboard_url])
    assert r.returncode == 0, r.stderr[-3000:]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        apps = cluster.api("/api/serve/applications/")["applications"]
        status = {n: apps.get(n, {}).get("status") for n in ("policy", "weather")}
        if set(status.values()) == {"RUNNING"} or "DEPLOY_FAILED" in status.values():
            break
        time.sleep(2)
    assert set(status.values()) == {"RUNNING"}, status
    # The run config states the deployed app's replica count, so its client routes each session to the
    # replica holding it (unstated, calls spread over both replicas and sessions got lost).
    cfg = write_run_config(tmp_path, "served", 6, script="benchmarks.weather_script:reply", hosting="serve",
                           num_replicas=conf["applications"][1]["args"]["num_replicas"])
    r = cluster.run([GYM_RAY, "collect", str(cfg), "--address", cluster.address])
    assert r.returncode == 0, r.stderr[-4000:]
    assert_complete(tmp_path / "served", 6)


def test_node_lost_mid_run_then_back(cluster, tmp_path):
    """Last in the module: it kills the worker node, then starts a new one."""
    cfg = write_run_config(tmp_path, "lost", 24, script="cluster_scripts:slow_reply", concurrency=8)
    out = tmp_path / "lost"
    before = {a["actor_id"] for a in cluster.actors()}
    log = (tmp_path / "lost.log").open("w")
    run = subprocess.Popen([GYM_RAY, "run", str(cfg), "--address", cluster.address], env=cluster.env, cwd=ROOT,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not part_files(out) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        node_b = cluster.node_ids()["node_b"]
        on_b = [a for a in new_agent_actors(cluster, before) if a["node_id"] == node_b and a["state"] == "ALIVE"]
        assert run.poll() is None and part_files(out) and on_b, (tmp_path / "lost.log").read_text()[-3000:]
        cluster.workers[0].kill()  # SIGKILL the node's process group and every process it started
        run.wait(300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
        log.close()
    text = (tmp_path / "lost.log").read_text()
    assert run.returncode == 0, text[-4000:]
    assert_complete(out, 24)
    summary = json.loads((out / ".gym_ray" / "metrics.json").read_text())["run"]
    assert summary["regrouped_groups"] >= 1 and summary["retried_rollouts"] >= 1, summary
    assert f"retried: {summary['retried_rollouts']} rollouts" in text
    attempts = read_rollout_table(out, ["attempt"])["attempt"].to_pylist()
    assert sum(a >= 1 for a in attempts) == summary["retried_rollouts"]
    assert node_b not in cluster.node_ids().values()

    cluster.start_worker("node_b")  # the node comes back (a new node id) and new agent actors use it
    new_b = cluster.node_ids()["node_b"]
    assert new_b != node_b
    cfg = write_run_config(tmp_path, "back", 4)
    before = {a["actor_id"] for a in cluster.actors()}
    r = cluster.run([GYM_RAY, "run", str(cfg), "--address", cluster.address])
    assert r.returncode == 0, r.stderr[-4000:]
    assert new_b in {a["node_id"] for a in new_agent_actors(cluster, before)}
    assert_complete(tmp_path / "back", 4)

