"""Running NeMo Gym's own processes (`ng_run`, `ng_collect_rollouts`) from an installed NeMo Gym venv.

The venvs are built by scripts/install.sh (`.venv-nemogym-0.4`, `.venv-nemogym-0.7`, Python 3.13);
`gym_ray.integrations.nemo_gym.launch` starts NeMo Gym (its own Ray, `ng_run`) from them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from gym_ray.integrations.nemo_gym.launch import clean_env, start_http_script

ROOT = Path(__file__).parents[3]
VERSIONS = {"0.4": "0.4.0", "0.7": "0.7.0"}
# NeMo Gym's own servers a test runs; 0.7 fronts every agent with a generated `legacy_agent` environment server.
NEMO_GYM_SERVERS = ["responses_api_models/openai_model", "responses_api_agents/simple_agent",
                    "environment_servers/legacy_agent"]
# `tests/` on the path of the servers NeMo Gym starts, so a gym_ray agent server can load a scripted policy.
TESTS_ON_PATH = {"PYTHONPATH": str(ROOT / "tests")}


def nemo_venv(version: str) -> Path:
    venv = ROOT / f".venv-nemogym-{version}"
    if not (venv / "bin" / "ng_run").exists():
        pytest.fail(f"{venv}: no NeMo Gym {VERSIONS[version]} venv; run scripts/install.sh")
    return venv


def start_policy(port: int, log: Path) -> subprocess.Popen:
    return start_http_script(Path(__file__).with_name("responses_policy.py"), port, log,
                             "the scripted Responses policy")


def model_blocks(policy_port: int) -> dict:
    return {"policy_model": {"responses_api_models": {"openai_model": {
        "entrypoint": "app.py", "openai_base_url": f"http://127.0.0.1:{policy_port}/v1",
        "openai_api_key": "dummy", "openai_model": "scripted"}}}}


def write_yaml(path: Path, blocks: dict) -> str:
    path.write_text(yaml.safe_dump(blocks, sort_keys=False))
    return path.name


def collect(venv: Path, cwd: Path, head_port: int, rows: Path, out: Path, num_repeats: int) -> list[dict]:
    """NeMo Gym's collector (`ng_collect_rollouts`) against the servers `ng_run` started; its results,
    after asserting it exited 0."""
    done = subprocess.run(
        [str(venv / "bin" / "ng_collect_rollouts"), f"+input_jsonl_fpath={rows}", f"+output_jsonl_fpath={out}",
         f"+num_repeats={num_repeats}", "+num_samples_in_parallel=16",
         f"+head_server={{host: 127.0.0.1, port: {head_port}}}"],
        cwd=cwd, env=clean_env(TESTS_ON_PATH), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]
