"""NeMo Gym's own numbers for `orchestration.py`'s workload, measured on this machine in the same sitting.

NeMo Gym's shipped `example_single_tool_call` resources server, its `simple_agent`, its `openai_model`
server in front of an instant Responses endpoint (`instant_responses.py`: the LLM's stand-in), all
started by its `ng_run` from the NeMo Gym venv scripts/install.sh builds, and played by its collector
`ng_collect_rollouts`: per rollout 2 model calls, 1 tool call and a verify, as in `orchestration.py`.
2,000 rollouts (500 rows x 4 repeats) at each concurrency (`num_samples_in_parallel`), after a warm-up.

rollouts/s is the collector's own figure (its "rollouts/min" line at 100%, timed from dispatch). CPU ms
per rollout counts every process this script started (NeMo Gym's servers, its Ray, the collector, the
instant model), less the collector's fixed start-up and wind-down CPU (a 5-rollout run's); the instant
model's share is shown apart, since `orchestration.py`'s scripted policy is counted in its figure.

    .venv/bin/python benchmarks/nemogym_baseline.py [--venv .venv-nemogym-0.7] [--rollouts 2000]
        [--concurrency 16 64 256]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.orchestration import cluster_cpu_seconds, core_speed_s  # noqa: E402
from gym_ray.integrations.nemo_gym.launch import (  # noqa: E402
    LaunchError,
    NgRun,
    clean_env,
    free_port,
    link_venvs,
    nemo_gym_root,
    start_http_script,
    stop_group,
)

SERVER = "example_single_tool_call"
AGENT = f"{SERVER}_simple_agent"  # the agent block of NeMo Gym's own config for that server
SERVER_DIRS = [f"resources_servers/{SERVER}", "responses_api_models/openai_model",
               "responses_api_agents/simple_agent", "environment_servers/legacy_agent"]
REPEATS = 4
_FINISHED = re.compile(r"Finished (\d+) / (\d+) rollouts \(100%\) in \S+ \(([\d.]+) rollouts/min\)")


def write_config(venv: Path, work: Path, model_port: int, head_port: int) -> Path:
    """NeMo Gym's own config for the server (resources server, simple_agent, environment server), its
    openai_model pointed at the instant model."""
    shipped = nemo_gym_root(venv) / "resources_servers" / SERVER
    blocks = yaml.safe_load((shipped / "configs" / f"{SERVER}.yaml").read_text())
    for dataset in blocks[AGENT]["responses_api_agents"]["simple_agent"].get("datasets", []):
        dataset["jsonl_fpath"] = str(shipped / "data" / Path(dataset["jsonl_fpath"]).name)
    model = {"policy_model": {"responses_api_models": {"openai_model": {
        "entrypoint": "app.py", "openai_base_url": f"http://127.0.0.1:{model_port}/v1",
        "openai_api_key": "dummy", "openai_model": "instant"}}}}
    config = {"head_server": {"host": "127.0.0.1", "port": head_port}, "skip_venv_if_present": True,
              "uv_venv_dir": str((work / "venvs").absolute()), **blocks, **model}
    path = work / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_rows(venv: Path, path: Path, n: int) -> Path:
    """`n` rows cycling the server's shipped example rows, each naming the simple agent that plays it."""
    shipped = (nemo_gym_root(venv) / "resources_servers" / SERVER / "data" / "example.jsonl").read_text()
    examples = [json.loads(line) for line in shipped.splitlines() if line.strip()]
    agent_ref = {"type": "responses_api_agents", "name": AGENT}
    path.write_text("".join(json.dumps({**examples[i % len(examples)], "agent_ref": agent_ref}) + "\n"
                            for i in range(n)))
    return path


def collect(venv: Path, work: Path, head_port: int, rows: Path, repeats: int, concurrency: int) -> dict:
    """One `ng_collect_rollouts` run; its rate, the rewards it wrote and the CPU it took (all processes)."""
    out = work / f"rollouts-{rows.stem}-c{concurrency}.jsonl"
    cpu0 = cluster_cpu_seconds()
    done = subprocess.run(
        [str(venv / "bin" / "ng_collect_rollouts"), f"+input_jsonl_fpath={rows}", f"+output_jsonl_fpath={out}",
         f"+num_repeats={repeats}", f"+num_samples_in_parallel={concurrency}",
         f"+head_server={{host: 127.0.0.1, port: {head_port}}}"],
        cwd=work, env=clean_env(), capture_output=True, text=True, timeout=1800)
    cpu = cluster_cpu_seconds() - cpu0
    if done.returncode != 0:
        raise LaunchError(f"ng_collect_rollouts exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
    finished = _FINISHED.findall(done.stdout + done.stderr)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    return {"rollouts": len(results), "rps": float(finished[-1][2]) / 60 if finished else float("nan"),
            "cpu_s": cpu, "rewards": [r.get("reward") for r in results]}


def model_cpu_seconds(proc: subprocess.Popen) -> float:
    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv-nemogym-0.7")
    ap.add_argument("--rollouts", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    venv = args.venv.absolute()
    if not (venv / "bin" / "ng_run").exists():
        sys.exit(f"--venv {args.venv}: no NeMo Gym installed there (scripts/install.sh builds .venv-nemogym-0.7)")
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
                              "print(m.version('nemo-gym'))"], capture_output=True, text=True).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="nemogym-baseline-") as tmp:
        work = Path(tmp)
        model_port = free_port()
        model = start_http_script(Path(__file__).with_name("instant_responses.py"), model_port, work / "model.log",
                                  "the instant model")
        ng = None
        try:
            head_port = free_port()
            config = write_config(venv, work, model_port, head_port)
            link_venvs(work, venv, SERVER_DIRS)
            ng = NgRun(venv, work, [config.name], head_port)
            rows = write_rows(venv, work / "rows.jsonl", args.rollouts // REPEATS)
            warm = write_rows(venv, work / "warm.jsonl", max(args.warmup // REPEATS, 1))
            tiny = write_rows(venv, work / "tiny.jsonl", 5)
            print(f"workload: NeMo Gym {version} {AGENT} + {SERVER} + openai_model over an instant model, "
                  f"{args.rollouts} rollouts per row; core speed: 10M Python adds in {core_speed_s():.2f} s",
                  flush=True)
            collect(venv, work, head_port, warm, REPEATS, 16)
            fixed_s = collect(venv, work, head_port, tiny, 1, 5)["cpu_s"]  # the collector's start-up, 5 rollouts
            table = []
            for c in args.concurrency:
                collect(venv, work, head_port, warm, REPEATS, c)
                m0 = model_cpu_seconds(model)
                r = collect(venv, work, head_port, rows, REPEATS, c)
                r["model_ms"] = (model_cpu_seconds(model) - m0) / r["rollouts"] * 1e3
                r["cpu_ms"] = (r["cpu_s"] - fixed_s) / r["rollouts"] * 1e3
                table.append((c, r))
                print(f"  c={c}: {r['rps']:.0f} rollouts/s, {r['cpu_ms']:.1f} CPU ms/rollout", flush=True)
        finally:
            if ng:
                ng.stop()
            stop_group(model)
    print(f"\n{'system':>16}  {'conc.':>5}  {'rollouts/s':>10}  {'CPU ms/rollout':>14}  {'of it, model':>12}  "
          f"{'status':>6}")
    for c, r in table:
        ok = "ok" if r["rollouts"] == args.rollouts and set(r["rewards"]) == {1.0} else "FAIL"
        print(f"{'NeMo Gym ' + version:>16}  {c:>5}  {r['rps']:>10.0f}  {r['cpu_ms']:>14.1f}  {r['model_ms']:>12.1f}  "
              f"{ok:>6}")


if __name__ == "__main__":
    main()
