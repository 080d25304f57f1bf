"""Running NeMo Gym's own processes (`ng_run`, `ng_collect_rollouts`) from an installed NeMo Gym venv.

The venvs are built by scripts/install.sh (`.venv-nemogym-0.4`, `.venv-nemogym-0.7`, Python 3.13).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from ports import free_port

ROOT = Path(__file__).parents[3]
VERSIONS = {"0.4": "0.4.0", "0.7": "0.7.0"}
# NeMo Gym's own servers a test runs; 0.7 fronts every agent with a generated `legacy_agent` environment server.
_NEMO_GYM_SERVERS = ("responses_api_models/openai_model", "responses_api_agents/simple_agent",
                     "environment_servers/legacy_agent")


def nemo_venv(version: str) -> Path:
    venv = ROOT / f".venv-nemogym-{version}"
    if not (venv / "bin" / "ng_run").exists():
        pytest.fail(f"{venv}: no NeMo Gym {VERSIONS[version]} venv; run scripts/install.sh")
    return venv


def clean_env() -> dict[str, str]:
    """This session's Ray address must not leak: NeMo Gym starts its own Ray (Python 3.13). `tests/` is
    on the path of the servers it starts, so a gym_ray agent server can load a scripted policy from it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT / "tests")}


def start_policy(port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("responses_policy.py")), str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the scripted Responses policy did not start: {log.read_text()[-2000:]}")


def link_nemo_gym_venvs(nemo_dir: Path, venv: Path) -> None:
    """NeMo Gym's own servers run in the installed venv (`skip_venv_if_present`: no uv build)."""
    for server in _NEMO_GYM_SERVERS:
        link = nemo_dir / "venvs" / server / ".venv"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(venv, target_is_directory=True)


def write_model_config(nemo_dir: Path, head_port: int, policy_port: int) -> Path:
    path = nemo_dir / "model.yaml"
    path.write_text(yaml.safe_dump({
        "head_server": {"host": "127.0.0.1", "port": head_port},
        "policy_model": {"responses_api_models": {"openai_model": {
            "entrypoint": "app.py", "openai_base_url": f"http://127.0.0.1:{policy_port}/v1",
            "openai_api_key": "dummy", "openai_model": "scripted"}}},
    }))
    return path


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # NeMo Gym (and `ray start --block`) stop their children on SIGINT
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class NemoRay:
    """A Ray head of NeMo Gym's own interpreter, in a process group of its own (`ray start --block`).

    NeMo Gym's `ray.init()` would start one itself; started here (no dashboard, one CPU, retried), it
    does not miss Ray's fixed 30 s raylet registration on a loaded machine, and it is stopped by its
    process group, never by `ray stop` (which would stop every Ray on the machine)."""

    def __init__(self, venv: Path, log: Path) -> None:
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "ray"), "start", "--head", "--block", f"--port={self.port}", "--num-cpus=1",
                 "--include-dashboard=false", "--disable-usage-stats"],
                env=clean_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "Ray runtime started" in log.read_text():
                    return
                time.sleep(1)
            _stop_group(self.proc)
        raise RuntimeError(f"NeMo Gym's Ray did not start: {log.read_text()[-2000:]}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop_group(self.proc)


class NgRun:
    """`ng_run` in its own process group, from `nemo_dir` (where gym_ray's server dir is), on its own Ray."""

    def __init__(self, venv: Path, nemo_dir: Path, configs: list[str], timeout_s: float = 420) -> None:
        self.log = nemo_dir / "ng_run.log"
        self.ray = NemoRay(venv, nemo_dir / "ray.log")
        self.proc = subprocess.Popen([str(venv / "bin" / "ng_run"), f"+config_paths=[{','.join(configs)}]",
                                      f"+ray_head_node_address={self.ray.address}"],
                                     cwd=nemo_dir, env=clean_env(), stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if not self._wait_ready(timeout_s):
            self.stop()
            raise RuntimeError(f"ng_run did not come up: {self.log.read_text()[-3000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while "servers ready!" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True

    def stop(self) -> None:
        _stop_group(self.proc)
        self.ray.stop()


def collect(venv: Path, cwd: Path, head_port: int, rows: Path, out: Path, num_repeats: int) -> subprocess.CompletedProcess:
    """NeMo Gym's collector (`ng_collect_rollouts`) against the servers `ng_run` started."""
    return subprocess.run(
        [str(venv / "bin" / "ng_collect_rollouts"), f"+input_jsonl_fpath={rows}", f"+output_jsonl_fpath={out}",
         f"+num_repeats={num_repeats}", "+num_samples_in_parallel=16",
         f"+head_server={{host: 127.0.0.1, port: {head_port}}}"],
        cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600,
    )
