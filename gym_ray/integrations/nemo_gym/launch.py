"""NeMo Gym's own servers started from an installed nemo-gym, in its own interpreter (`ng_run`).

NeMo Gym ≥ 0.5 needs Python 3.13 and pins packages gym_ray cannot share, so it runs from its own venv
(scripts/install.sh builds `.venv-nemogym-0.4` and `.venv-nemogym-0.7`). `ng_run` always joins or starts a
Ray cluster; `NemoRay` starts one for it from that venv (one CPU, no dashboard, retried), so NeMo Gym's
Ray never meets gym_ray's and both are stopped by their process groups, never by `ray stop`.

`serve_resources_servers(venv, ["example_single_tool_call", ...], workdir)` runs NeMo Gym's shipped
resources servers for the bridge env (`bridge.py`); `python -m gym_ray.integrations.nemo_gym.launch`
does the same from a shell and prints the env config to use.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml


class LaunchError(RuntimeError):
    """NeMo Gym did not come up; the message holds the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's Ray address must not leak into NeMo Gym's processes: they use their own Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            **(extra or {})}


def stop_group(*procs: subprocess.Popen, grace_s: float = 60) -> None:
    """Stop the process groups of `procs` together: SIGINT (NeMo Gym and `ray start --block` stop their
    children on it), then SIGKILL what is left after `grace_s`, one deadline for all."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        os.killpg(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def start_http_script(script: Path, port: int, log: Path, what: str, timeout_s: float = 60) -> subprocess.Popen:
    """Run `script PORT` (a stand-in server for NeMo Gym to call) in its own process group; return once
    `GET /` answers."""
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.3)
    stop_group(proc)
    raise LaunchError(f"{what} did not start: {log.read_text()[-2000:]}")


def nemo_gym_root(venv: Path) -> Path:
    """Where the venv's nemo-gym installed its server folders (`resources_servers/`, ...)."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import nemo_gym, pathlib; print(pathlib.Path(nemo_gym.__file__).parents[1])"],
                         capture_output=True, text=True, env=clean_env())
    if out.returncode != 0:
        raise LaunchError(f"{venv}: no nemo-gym installed ({out.stderr.strip()[-300:]})")
    return Path(out.stdout.strip())


def resources_server_blocks(venv: Path, name: str) -> dict:
    """The resources-server blocks of NeMo Gym's own config for server `name` (its agents left out)."""
    root = nemo_gym_root(venv) / "resources_servers"
    configs = root / name / "configs"
    if not configs.is_dir():
        shipped = sorted(p.name for p in root.iterdir() if (p / "configs").is_dir())
        raise LaunchError(f"{name!r}: not a resources server of {venv} (it ships {len(shipped)}: "
                          f"{', '.join(shipped[:12])}, ...)")
    # its `<name>.yaml`, else the first of its configs (some servers ship only variants: lmarena_v2.yaml, ...)
    for path in sorted(configs.glob("*.yaml"), key=lambda p: (p.stem != name, p.name)):
        config = yaml.safe_load(path.read_text()) or {}
        blocks = {k: v for k, v in config.items() if isinstance(v, dict) and "resources_servers" in v}
        if blocks:
            return blocks
    raise LaunchError(f"{name!r}: none of {configs}'s files configures a resources server")


def link_venvs(nemo_dir: Path, venv: Path, server_dirs: list[str]) -> None:
    """NeMo Gym's servers run in the installed venv (`skip_venv_if_present`: no uv build per server)."""
    for server in server_dirs:
        link = nemo_dir / "venvs" / server / ".venv"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(venv.absolute(), target_is_directory=True)


START_TIMEOUT_S = 600  # `ray start` needs ~15 s alone here, minutes beside a busy test suite


class NemoRay:
    """A Ray head of NeMo Gym's interpreter, in a process group of its own (`ray start --block`); started
    here so a loaded machine does not make NeMo Gym's own `ray.init()` miss Ray's 30 s registration."""

    def __init__(self, venv: Path, log: Path, env: dict[str, str]) -> None:
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "ray"), "start", "--head", "--block", f"--port={self.port}", "--num-cpus=1",
                 "--include-dashboard=false", "--disable-usage-stats"],
                env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            # a start that fails exits (and is tried again); a slow one on a loaded machine is waited for
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "Ray runtime started" in log.read_text():
                    return
                time.sleep(1)
            stop_group(self.proc)
        raise LaunchError(f"NeMo Gym's Ray did not start: {log.read_text()[-2000:]}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_group(self.proc)


class NgRun:
    """`ng_run` in its own process group, from `nemo_dir`, on its own Ray; `head_port` is its head server."""

    def __init__(self, venv: Path, nemo_dir: Path, configs: list[str], head_port: int,
                 env: dict[str, str] | None = None, timeout_s: float = 420) -> None:
        venv = Path(venv).absolute()  # ng_run runs in nemo_dir
        self.venv, self.head_port = venv, head_port
        self.instances: dict[str, str] = {}  # set by serve_resources_servers
        self.log = nemo_dir / "ng_run.log"
        env = clean_env(env)
        self.ray = NemoRay(venv, nemo_dir / "ray.log", env)
        try:
            self.proc = subprocess.Popen([str(venv / "bin" / "ng_run"), f"+config_paths=[{','.join(configs)}]",
                                          f"+ray_head_node_address={self.ray.address}"],
                                         cwd=nemo_dir, env=env, stdout=self.log.open("w"),
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            self.ray.stop()
            raise
        if not self._wait_ready(timeout_s):
            self.stop()
            raise LaunchError(f"ng_run did not come up: {self.log.read_text()[-3000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while "servers ready!" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True

    @property
    def head_url(self) -> str:
        return f"http://127.0.0.1:{self.head_port}"

    def stop(self) -> None:
        stop_group(self.proc, self.ray.proc)


def serve_resources_servers(venv: Path, names: list[str], nemo_dir: Path, extra_configs: list[str] = (),
                            env: dict[str, str] | None = None) -> NgRun:
    """`ng_run` serving NeMo Gym's shipped resources servers `names` (plus the config files
    `extra_configs`, relative to `nemo_dir`; `env` added to its environment); the caller stops it."""
    venv, nemo_dir = Path(venv).absolute(), Path(nemo_dir)
    nemo_dir.mkdir(parents=True, exist_ok=True)
    blocks: dict = {}
    instances: dict[str, str] = {}  # server folder -> its instance's name in NeMo Gym's config
    for name in names:
        found = resources_server_blocks(venv, name)
        instances[name] = next(iter(found))
        blocks |= found
    head_port = free_port()
    config = {"head_server": {"host": "127.0.0.1", "port": head_port}, "skip_venv_if_present": True,
              "uv_venv_dir": str((nemo_dir / "venvs").absolute()), **blocks}
    (nemo_dir / "resources_servers.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    link_venvs(nemo_dir, venv, [f"resources_servers/{n}" for n in names])
    ng = NgRun(venv, nemo_dir, ["resources_servers.yaml", *extra_configs], head_port, env)
    ng.instances = instances
    return ng


def main(argv: list[str] | None = None) -> None:
    """Serve NeMo Gym resources servers until Ctrl-C and print the gym_ray env config for each."""
    parser = argparse.ArgumentParser(prog="python -m gym_ray.integrations.nemo_gym.launch", description=main.__doc__)
    parser.add_argument("--venv", type=Path, required=True, help="a venv with nemo-gym installed")
    parser.add_argument("--dir", type=Path, default=Path("runs/nemo_gym"), help="where ng_run's files go")
    parser.add_argument("servers", nargs="+", help="resources servers shipped with nemo-gym")
    args = parser.parse_args(argv)
    try:
        ng = serve_resources_servers(args.venv, args.servers, args.dir)
    except LaunchError as e:
        sys.exit(f"launch: {e}")
    try:
        envs = {name: {"server": "gym_ray.integrations.nemo_gym.bridge:NemoGymResources",
                       "config": {"head_server": ng.head_url, "server": instance}}
                for name, instance in ng.instances.items()}
        print(yaml.safe_dump({"envs": envs}, sort_keys=False), flush=True)
        ng.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        ng.stop()


if __name__ == "__main__":
    main()
