"""The `gym-ray` CLI: every environment's config runs as is with the scripted policy; errors exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gym_ray import compat
from gym_ray.cli import main, parse_args
from gym_ray.errors import FailureKind
from gym_ray.rundir import part_files, read_rollout_table
from gym_ray.types import ROLLOUT_SCHEMA, rollouts_from_arrow

ROOT = Path(__file__).resolve().parent.parent
ENV_CONFIGS = sorted(ROOT.glob("environments/*/config.yaml"))


def _run_and_check(config: Path, out: Path, capsys, envs: list[str], *overrides: str, command: str = "run",
                   model: str = "model.kind=scripted", tasks: int = 2, repeats: int = 2) -> None:
    rc = main([command, str(config), model, f"collect.output_dir={out}", f"collect.limit={tasks}",
               f"collect.num_repeats={repeats}", "collect.episode_timeout_s=240", *overrides])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:]
    table = read_rollout_table(out)
    assert pq.read_schema(part_files(out)[0]) == ROLLOUT_SCHEMA
    rows = rollouts_from_arrow(table)
    keys = sorted((r.env, r.task_id, r.rollout_index) for r in rows if r.segment_index == 0)
    n = repeats * tasks * len(envs)
    assert len(keys) == n and len(set(keys)) == len(keys)  # tasks x repeats per env, once each
    for r in rows:
        r.check_invariants()
    metrics = json.loads((out / ".gym_ray" / "metrics.json").read_text())
    assert metrics["overall"]["rollouts"] == n and sorted(metrics["per_env"]) == sorted(envs)
    assert f"pass@{repeats}" in printed.out and all(env in printed.out for env in envs)
    # whatever the model says, no episode may have crashed or timed out; a prompt longer than the model's
    # context (tau2_bench's policy, BFCL's long rows on a 2048-token model) is refused as itself
    for r in rows:
        too_long = r.status.value == "model_error" and r.failure_kind == FailureKind.PROMPT_TOO_LONG
        assert r.status.value in ("ok", "env_error") or too_long, (r.env, r.status.value, r.failure_kind, r.error)
    assert main(["metrics", str(out)]) == 0
    assert "pass@1" in capsys.readouterr().out


def test_an_env_config_runs_as_is_with_scripted_policy(tmp_path, serve_http_port, capsys):
    """The README's one-line command on one environment's own file (the run below merges them all)."""
    _run_and_check(ROOT / "environments" / "weather" / "config.yaml", tmp_path / "run", capsys, ["weather"])


def test_every_env_config_runs_with_scripted_policy(tmp_path, serve_http_port, capsys):
    """All environment configs in one run (one deployment, ~1/8 of the time): each env's own block as is."""
    combined = tmp_path / "all.yaml"
    combined.write_text("includes:\n" + "".join(f"  - {p}\n" for p in ENV_CONFIGS))
    _run_and_check(combined, tmp_path / "run", capsys, [p.parent.name for p in ENV_CONFIGS])


@pytest.mark.slow
def test_every_env_config_runs_as_is_on_the_default_model(tmp_path, shared_vllm, capsys):
    """No override of the model: each env's own config on the embedded vLLM policy. The envs are served
    as `gym-ray serve` serves them and `gym-ray collect` plays them on the session's engine, which is the
    default model as `gym-ray run` deploys it, app `policy` (the judge env grades with it too)."""
    from gym_ray.config import load_config
    from gym_ray.resources.serve import deploy_envs

    assert shared_vllm[1] == "policy"
    combined = tmp_path / "all.yaml"
    combined.write_text("includes:\n" + "".join(f"  - {p}\n" for p in ENV_CONFIGS))
    apps = deploy_envs({n: e for n, e in load_config(combined).envs.items() if e.hosting == "serve"})
    try:
        _run_and_check(combined, tmp_path / "run", capsys, [p.parent.name for p in ENV_CONFIGS],
                       "collect.sampling.max_tokens=48", "model.engine_kwargs.max_model_len=2048",
                       command="collect", model="model.name=policy", tasks=1, repeats=1)
    finally:
        compat.delete_apps(apps)


def test_cli_errors_are_clean_with_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("collect:\n  concurency: 3\n")
    assert main(["run", str(cfg)]) == 2
    assert "unknown key collect.concurency" in capsys.readouterr().err
    data = tmp_path / "tasks.jsonl"
    data.write_text('{"task_id": "a", "prompt": "hi"}\n{"task_id": "b"}\n')
    cfg.write_text(f"envs:\n  weather:\n    server: gym_ray_env_weather.server:Weather\n    data: [{data}]\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "prompt" in err
    assert main(["metrics", str(tmp_path)]) == 2
    assert "no rollout files" in capsys.readouterr().err


def test_overrides_may_follow_options():
    args = parse_args(["collect", "c.yaml", "a=1", "--address", "host:6379", "b=2", "--resume", "c=3"])
    assert (args.config, args.overrides, args.address, args.resume) == ("c.yaml", ["a=1", "b=2", "c=3"],
                                                                        "host:6379", True)
    with pytest.raises(SystemExit):
        parse_args(["collect", "c.yaml", "--adress", "x"])
    with pytest.raises(SystemExit):
        parse_args(["metrics", "out", "a=1"])


def test_serve_config_builds_the_apps_collect_looks_for():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from gym_ray.importer import import_object

    spec = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text()))
    names = []
    for app in spec.applications:
        built = import_object(app.import_path)(dict(app.args))
        assert type(built).__name__ == "Application"
        names.append(app.name)
    assert names[0] == "policy" and "weather" in names


@pytest.mark.slow
def test_serve_in_one_process_collect_from_another(tmp_path, serve_http_port):
    """The cluster workflow: `gym-ray serve` keeps the apps up, `gym-ray collect --address` finds them."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    import ray

    address = ray.get_runtime_context().gcs_address
    config = str(ROOT / "environments" / "weather" / "config.yaml")
    common = ["--address", address, "model.kind=scripted", "model.name=cli_policy"]
    cli = [sys.executable, "-m", "gym_ray.cli"]
    # started with SIGINT ignored, as a background job of a script is: Ctrl-C must still stop it
    server = subprocess.Popen([*cli, "serve", config, *common], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        printed = []
        for line in server.stdout:
            printed.append(line)
            if line.startswith("collect with:"):
                break
        assert server.poll() is None, "".join(printed)[-3000:]
        assert any("env weather" in line for line in printed), printed
        out = tmp_path / "run"
        done = subprocess.run([*cli, "collect", config, *common, f"collect.output_dir={out}", "collect.limit=3"],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = rollouts_from_arrow(read_rollout_table(out))
        assert sorted((r.task_id, r.rollout_index) for r in rows) == sorted(
            {(r.task_id, i) for r in rows for i in range(4)})  # 3 tasks x 4 repeats, each once
        assert len(rows) == 12 and {r.model for r in rows} == {"cli_policy"}
        assert "weather" in done.stdout and "pass@4" in done.stdout
        assert server.poll() is None  # collect left the apps serving
    finally:
        # keep reading what it prints, so a full pipe cannot hold it at exit on a loaded machine
        threading.Thread(target=server.stdout.read, daemon=True).start()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
        finally:
            compat.delete_apps(["cli_policy", "weather"])
    assert server.returncode == 0
