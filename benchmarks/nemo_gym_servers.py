"""Every resources server of NeMo Gym's source distribution, run through gym_ray's bridge on its own example rows.

For each server folder of the installed nemo-gym (`resources_servers/<name>/` with `configs/` and
`data/example.jsonl`): its `requirements.txt` goes into a venv of its own layered on the NeMo Gym venv (a
`.pth` line makes nemo-gym importable beneath the server's pins; uv installs into that venv alone, so no server
can break another or the NeMo Gym venv the tests use); NeMo Gym's own `ng_run` serves it; each example row is played in this process by the
bridge env (`gym_ray.integrations.nemo_gym.bridge`): `seed_session`, then `verify` on a fixed scripted reply.
A row is *scored* when the server's verify returns a reward (whatever its value); a server counts as
working when every row it ran was scored. Servers are served in batches (one `ng_run` each); a batch that
does not come up is retried one server at a time, so one broken server costs only itself.

Writes the table (server, requirements, started, rows scored, why not) to environments/README.md's NeMo Gym
section and the machine-readable result to gym_ray/integrations/nemo_gym/servers.json, which `gym-ray envs`
counts as reachable.

    .venv/bin/python benchmarks/nemo_gym_servers.py [--venv .venv-nemogym-0.7] [--only a b ...] [--batch 8]
        [--work DIR --resume]   # keep the venvs; a stopped measurement goes on where it stopped
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gym_ray.config import EnvConfig
from gym_ray.integrations.nemo_gym.launch import (
    LaunchError,
    clean_env,
    nemo_gym_root,
    resources_server_blocks,
    serve_resources_servers,
)
from gym_ray.resources.client import make_env_client
from gym_ray.tasks import TaskLoadError, load_tasks
from gym_ray.types import Message

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "gym_ray" / "integrations" / "nemo_gym" / "servers.json"
README = ROOT / "environments" / "README.md"
BEGIN, END = "<!-- nemo-gym servers: written by benchmarks/nemo_gym_servers.py -->", "<!-- /nemo-gym servers -->"
REPLY = "I am not sure; my best answer is 42."


def requirements(folder: Path) -> list[str]:
    """The server's own requirement lines (nemo-gym itself, `-e` lines and comments left out)."""
    path = folder / "requirements.txt"
    if not path.is_file():
        return []
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("-") and not ln.lower().startswith("nemo-gym")]


def server_venv(base: Path, name: str, reqs: list[str], where: Path, timeout_s: float) -> tuple[Path, str]:
    """`base` itself when the server needs nothing more; else a venv of its own over `base` with `reqs`
    installed. Returns (venv, error or "")."""
    if not reqs:
        return base, ""
    venv = where / name
    if not (venv / "bin" / "python").exists():
        subprocess.run([str(base / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)], check=True)
        site = next(venv.glob("lib/python*/site-packages"))
        base_site = next(base.glob("lib/python*/site-packages"))
        (site / "nemo_gym_base.pth").write_text(f"{base_site}\n")
    # uv installs into this venv only (pip's --prefix would uninstall the base venv's copy of a pinned package)
    uv = Path(sys.executable).with_name("uv")
    cmd = [str(uv if uv.exists() else "uv"), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
           "--python-version", "3.13.14", "--index-strategy", "unsafe-best-match", *reqs]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=clean_env())
    except subprocess.TimeoutExpired:
        return venv, f"requirements did not install in {timeout_s:.0f} s"
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()] or ["uv failed"]
        return venv, "requirements: " + lines[-1][:160]
    return venv, ""


async def play(bridge: dict, rows_file: Path, name: str) -> tuple[int, int, str]:
    """(rows, rows scored, first error) for one server (the bridge's config `bridge`) on its example rows."""
    cfg = EnvConfig(server="gym_ray.integrations.nemo_gym.bridge:NemoGymResources", data=[str(rows_file)],
                    config=bridge)
    try:
        tasks = load_tasks(cfg.data, default_env=name)
    except TaskLoadError as e:  # rows gym_ray cannot take as tasks (e.g. a task_id used twice): the finding
        return 0, 0, "data: " + re.sub(r"/\S+/", "", str(e).split(": ", 2)[-1])[:160]
    env = make_env_client(name, cfg)
    scored, why = 0, ""
    for i, task in enumerate(tasks):
        sid = f"{name}-{i}"
        try:
            await env.seed_session(sid, task)
            result = await env.verify(sid, task, [*task.prompt, Message(role="assistant", content=REPLY)])
            if result.reward == result.reward:  # a number, not NaN
                scored += 1
        except Exception as e:  # the server's failure is the finding
            why = why or f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        finally:
            try:
                await env.close_session(sid)
            except Exception:
                pass
    return len(tasks), scored, why


def _model_server(name: str, base: Path) -> str:
    """The first key of the server's config block naming a `responses_api_models` server (a judge, a user
    simulator), or "" when it needs none."""
    def walk(node, key=""):
        if isinstance(node, dict):
            if node.get("type") == "responses_api_models":
                return key
            return next((found for k, v in node.items() if (found := walk(v, k))), "")
        return ""

    try:
        return walk(resources_server_blocks(base, name))
    except LaunchError:
        return ""


def serve_and_play(base: Path, names: list[str], venvs: dict[str, Path], root: Path, work: Path) -> dict:
    """One ng_run for `names`; each server's rows played. Raises LaunchError when the batch does not come up."""
    nemo_dir = work / f"batch-{names[0]}"
    for name in names:  # each server in its own venv (the base one when it needs nothing more)
        link = nemo_dir / "venvs" / "resources_servers" / name / ".venv"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(venvs[name].absolute(), target_is_directory=True)
    ng = serve_resources_servers(base, names, nemo_dir)
    try:
        return {name: asyncio.run(play({"head_server": ng.head_url, "server": ng.instances[name]},
                                       root / "resources_servers" / name / "data" / "example.jsonl", name))
                for name in names}
    finally:
        ng.stop()


def _last_error(log: Path, name: str) -> str:
    """The last exception line ng_run's log holds for server `name` (or its last line)."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    mine = [ln for ln in lines if f"({name}_resources_server)" in ln] or lines
    errors = [ln for ln in mine if re.search(r"\w+(Error|Exception)\b", ln)] or mine or ["ng_run failed"]
    return errors[-1].split(")", 1)[-1].strip()[:160]


def measure(base: Path, only: list[str], batch: int, pip_timeout_s: float, progress=None, work: Path | None = None,
            done: dict[str, dict] | None = None) -> list[dict]:
    """`done`: results of an earlier, stopped measurement (servers that started, or failed to): kept as they are."""
    root = nemo_gym_root(base)
    folders = sorted(p.parent for p in root.glob("resources_servers/*/configs"))
    folders = [f for f in folders if not only or f.name in only]
    work = work or Path(tempfile.mkdtemp(prefix="nemo-gym-servers-"))
    results: dict[str, dict] = {}
    venvs: dict[str, Path] = {}
    for f in folders:
        if done and f.name in done:
            results[f.name] = done[f.name]
            continue
        reqs = requirements(f)
        t = time.monotonic()
        venv, err = server_venv(base, f.name, reqs, work / "venvs", pip_timeout_s)
        venvs[f.name] = venv
        results[f.name] = {"server": f.name, "requirements": len(reqs), "started": False, "rows": 0, "scored": 0,
                           "why": err, "install_s": round(time.monotonic() - t, 1)}
        if not (f / "data" / "example.jsonl").is_file():
            results[f.name]["why"] = "no data/example.jsonl"
        elif model := _model_server(f.name, base):
            results[f.name]["why"] = f"needs a NeMo Gym model server ({model}); none is served here"
        print(f"{f.name}: {len(reqs)} requirements {'ok' if not err else err}", flush=True)
    ready = [[n] for n, r in results.items() if not r["why"] and not r["started"]]
    ready = [sum(ready[i:i + batch], []) for i in range(0, len(ready), batch)]
    ray_failures = 0
    while ready:
        names = ready.pop(0)
        try:
            per = serve_and_play(base, names, venvs, root, work)
        except LaunchError as e:
            print(f"batch {names}: {str(e).strip().splitlines()[-1][:200]}", flush=True)
            if "Ray did not start" in str(e) and ray_failures < 5:  # the machine, not a server: again
                ray_failures += 1
                ready.insert(0, names)
                continue
            # ng_run names the server that went down: it is out, the rest goes back in line; with no name
            # (a batch that timed out), the batch is halved until the one server that fails is alone
            crashed = re.findall(r"Process `(\w+?)(?:_resources_server)?` finished unexpectedly", str(e))
            out = [n for n in names if n in crashed] or (names if len(names) == 1 else [])
            for name in out:
                results[name]["why"] = "did not start: " + _last_error(work / f"batch-{names[0]}" / "ng_run.log", name)
            rest = [n for n in names if n not in out]
            ready[:0] = [rest] if out else [rest[: len(rest) // 2], rest[len(rest) // 2:]]
            ready = [b for b in ready if b]
            continue
        for name, (rows, scored, why) in per.items():
            results[name].update(started=True, rows=rows, scored=scored, why=why)
            print(f"{name}: {scored}/{rows} scored {why}", flush=True)
        if progress:
            progress(list(results.values()))
    return list(results.values())


def table(results: list[dict], version: str) -> str:
    working = [r for r in results if r["rows"] and r["scored"] == r["rows"]]
    pending = [r for r in results if not r["started"] and not r["why"]]
    lines = [BEGIN, f"NeMo Gym {version}: {len(working)} of {len(results)} resources servers scored every example "
             f"row through the bridge ({sum(r['started'] for r in results)} started"
             + (f"; {len(pending)} not measured yet: the measurement was stopped, `--resume` goes on" if pending
                else "") + "). Measured by "
             "`benchmarks/nemo_gym_servers.py`; a row is scored when the server's `verify` returns a reward for a "
             "fixed scripted reply.", "", "| server | requirements | started | rows scored | why not |",
             "|---|---|---|---|---|"]
    for r in results:
        why = r["why"].replace("|", "\\|") if r["why"] else "not measured yet" if r in pending else ""
        lines.append(f"| `{r['server']}` | {r['requirements']} | {'yes' if r['started'] else 'no'} | "
                     f"{r['scored']}/{r['rows']} | {why} |")
    return "\n".join([*lines, END])


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` stops the ng_run in flight (its finally)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", type=Path, default=ROOT / ".venv-nemogym-0.7")
    p.add_argument("--only", nargs="*", default=[])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--pip-timeout", type=float, default=300)
    p.add_argument("--work", type=Path, default=None, help="where the server venvs go (kept, reused by --resume)")
    p.add_argument("--resume", action="store_true", help="keep the servers the saved result already measured")
    p.add_argument("--table-only", action="store_true", help="rewrite the README section from the saved result")
    args = p.parse_args()
    version = subprocess.run([str(args.venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
                              "print(m.version('nemo-gym'))"], capture_output=True, text=True).stdout.strip()
    def save(results: list[dict]) -> None:  # after every batch: a stopped measurement keeps what it saw
        OUT_JSON.write_text(json.dumps({"nemo_gym": version, "servers": results}, indent=1) + "\n")

    if args.table_only:
        saved = json.loads(OUT_JSON.read_text())
        write_readme(saved["servers"], saved["nemo_gym"])
        return
    done = {}
    if args.resume and OUT_JSON.is_file():
        saved = json.loads(OUT_JSON.read_text())
        if saved["nemo_gym"] == version:
            done = {r["server"]: r for r in saved["servers"] if r["started"] or r["why"].startswith("did not start")}
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    results = measure(args.venv.absolute(), args.only, args.batch, args.pip_timeout, None if args.only else save,
                      args.work, done)
    if args.only:
        print(json.dumps(results, indent=1))
        return
    save(results)
    write_readme(results, version)


def write_readme(results: list[dict], version: str) -> None:
    text = README.read_text()
    section = table(results, version)
    if BEGIN in text:
        text = text.split(BEGIN)[0] + section + text.split(END, 1)[1]
    else:
        text += f"\n## NeMo Gym's resources servers, measured\n\n{section}\n"
    README.write_text(text)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
