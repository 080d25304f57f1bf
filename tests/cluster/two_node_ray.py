"""A real two-node Ray cluster on this machine for the cluster tests: a head (`ray start --head --block`)
and a worker (`ray start --address ... --block`), each in its own process group, with its own ports and
a custom resource (`node_a`, `node_b`) so placement can be asserted. Token auth is on, as Ray 2.60 turns
it on; the token lives in `RAY_AUTH_TOKEN` of the cluster's environment, never in ~/.ray.

Teardown is by PID only: SIGTERM each `ray start --block` (it stops its own node), then SIGKILL whatever
of the descendants recorded while the node ran is still alive. Never a machine-wide `ray stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
GYM_RAY = str(VENV_BIN / "gym-ray")
SERVE = str(VENV_BIN / "serve")
HERE = Path(__file__).resolve().parent


class RayNode:
    """One `ray start --block` process group and the processes it started."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path):
        self.name = name
        self.argv = argv
        self.log = log
        self._log_f = log.open("ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log_f, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pids: set[int] = {self.proc.pid}

    def remember_children(self) -> None:
        """Record the node's processes (raylet, agents, workers) so teardown can reach every one."""
        try:
            self.pids.update(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def kill(self) -> None:
        """SIGKILL the node's whole process group and every process it started: a lost machine."""
        self.remember_children()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._kill_left()
        self.proc.wait(30)

    def stop(self) -> None:
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self._kill_left()
        self._log_f.close()

    def _kill_left(self) -> None:
        procs = []
        for pid in self.pids:
            try:
                p = psutil.Process(pid)
                p.kill()
                procs.append(p)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=20)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class TwoNodeCluster:
    """Head (`node_a`, 2 CPUs) + worker (`node_b`, 1 CPU); `env` is what clients of it need."""

    def __init__(self, root: Path):
        self.root = root
        # Ray's socket paths (temp dir + session name + socket) must fit in 107 bytes: pytest's tmp_path is too long
        self.temp_dir = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
        self.token = uuid.uuid4().hex
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # a lost node is declared dead in ~3 s instead of Ray's default ~15 s
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "RAY_metrics_report_interval_ms": "1000",  # metrics reach the export port within ~1 s
            # the scripted policy of these tests (cluster_scripts) and benchmarks/ import in every worker
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
        self.env.pop("RAY_ADDRESS", None)
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []
        self.worker_temp_dirs: list[Path] = []
        self.metrics_ports: dict[str, int] = {}

    def _node_ports(self, name: str) -> list[str]:
        self.metrics_ports[name] = free_port()
        return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--metrics-export-port={self.metrics_ports[name]}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", "--disable-usage-stats"]

    def start_head(self) -> None:
        argv = [RAY, "start", "--head", "--block", f"--port={self.gcs_port}", f"--temp-dir={self.temp_dir}",
                "--num-cpus=2", '--resources={"node_a": 1}', "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}", "--object-store-memory=200000000",
                *self._node_ports("node_a")]
        self.head = RayNode("node_a", argv, self.env, self.root / "head.log")
        self.wait_nodes(1, 180, self.head)

    def start_worker(self, resource: str = "node_b", attempts: int = 3) -> RayNode:
        """Join a worker node; retried, as a loaded machine can make `ray start` miss the GCS's deadline."""
        for attempt in range(attempts):
            # a node's own temp dir, as on separate machines: nodes sharing one would share runtime_resources/,
            # and one node's runtime-env agent deletes a job's unpacked working_dir while another node's driver
            # runs in it
            temp_dir = Path(tempfile.mkdtemp(prefix="grw-", dir="/tmp"))
            self.worker_temp_dirs.append(temp_dir)
            argv = [RAY, "start", f"--address={self.address}", "--block", "--num-cpus=1", f"--temp-dir={temp_dir}",
                    f'--resources={{"{resource}": 1}}', "--object-store-memory=100000000",
                    *self._node_ports(resource)]
            node = RayNode(resource, argv, self.env, self.root / f"{resource}-{len(self.workers)}-{attempt}.log")
            self.workers.append(node)
            try:
                self.wait_nodes(1 + sum(w.proc.poll() is None for w in self.workers), 180, node)
                return node
            except (RuntimeError, TimeoutError):
                node.stop()
                self.workers.remove(node)
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def api(self, path: str) -> dict:
        """GET the dashboard's REST API with the cluster's token."""
        req = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def alive_nodes(self) -> list[dict]:
        """ALIVE nodes as the GCS sees them (state API; the dashboard's /nodes view lags behind a lost node)."""
        nodes = self.api("/api/v0/nodes?limit=1000&detail=1")["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE"]

    def node_ids(self) -> dict[str, str]:
        """Custom resource name (node_a / node_b) -> node id of the alive node holding it."""
        return {res: n["node_id"] for n in self.alive_nodes() for res in n.get("resources_total", {})
                if res.startswith("node_")}

    def wait_nodes(self, n: int, timeout: float, node: RayNode) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode}: {node.log.read_text()[-3000:]}")
            try:
                if len(self.alive_nodes()) >= n:
                    node.remember_children()
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{n} alive nodes not reached in {timeout:.0f} s: {node.log.read_text()[-3000:]}")

    def actors(self, class_name: str = "AgentWorker") -> list[dict]:
        """Every actor of that class the cluster knows, dead ones included (state API)."""
        data = self.api(f"/api/v0/actors?limit=10000&detail=1&filter_keys=class_name&filter_predicates=%3D"
                        f"&filter_values={class_name}")
        return data["data"]["result"]["result"]

    def run(self, argv: list[str], timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=env or self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.head is not None:
            self.head.stop()
        for d in [self.temp_dir, *self.worker_temp_dirs]:
            shutil.rmtree(d, ignore_errors=True)


def start_cluster(root: Path, attempts: int = 3) -> TwoNodeCluster:
    """Head then worker; on a loaded machine a start can miss Ray's fixed waits, so it is retried."""
    for attempt in range(attempts):
        cluster = TwoNodeCluster(root / f"c{attempt}")
        cluster.root.mkdir(parents=True)
        try:
            cluster.start_head()
            cluster.start_worker()
            return cluster
        except (RuntimeError, TimeoutError):
            cluster.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def scrape_gym_ray(port: int) -> dict[tuple[str, tuple], float]:
    """The `ray_gym_ray_*` samples of one node's metrics export endpoint (Prometheus text), as
    (name, sorted labels without Ray's per-process ones) -> value summed over processes."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith("ray_gym_ray_"):
                continue
            labels = tuple(sorted((k, v) for k, v in s.labels.items()
                                  if k in ("env", "status", "actor", "le")))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out
