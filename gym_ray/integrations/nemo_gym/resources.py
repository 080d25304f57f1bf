"""gym_ray's environments as NeMo Gym resources servers, one process (and port) per env.

NeMo Gym reaches a server at `http://{host}:{port}{url_path}` (`ServerClient._build_server_base_url`),
with no path prefix, and accepts only server instances it starts itself (a block with an `entrypoint`).
So each env served on Ray Serve gets a NeMo Gym server block whose entrypoint is a small forwarder: NeMo
Gym starts it, gives it a host and port, and it passes every request verbatim (method, path, body,
cookies, status) to the env's Serve route. The routes stay defined once, in `gym_ray.resources.serve`,
and the env keeps its replicas and sessions on the Ray cluster.

`write_nemo_gym_dir` lays out what `ng_run` needs, run from that directory:
`resources_servers/gym_ray/{app.py,requirements.txt}` and `config.yaml`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import yaml

_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
SERVER_DIR = Path("resources_servers") / "gym_ray"
AGENT_DIR = Path("responses_api_agents") / "gym_ray"
APP = "from gym_ray.integrations.nemo_gym.resources import main\n\nmain()\n"
AGENT_APP = "from gym_ray.integrations.nemo_gym.agent_server import main\n\nmain()\n"


def forwarding_app(upstream: str):
    """A Starlette app sending every request on to `upstream` (an env's Serve URL) and its answer back."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    upstream = upstream.rstrip("/")
    client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None))

    async def forward(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        answer = await client.request(
            request.method, f"{upstream}{request.url.path}{query}", content=await request.body(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in _HOP},
        )
        response = Response(answer.content, status_code=answer.status_code)  # sets content-length
        response.raw_headers += [(k.encode("latin-1"), v.encode("latin-1"))
                                 for k, v in answer.headers.multi_items() if k.lower() not in _HOP]
        return response

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])


def main() -> None:
    """The entrypoint NeMo Gym runs: its own server block (`NEMO_GYM_CONFIG_PATH` in the config dict
    `NEMO_GYM_CONFIG_DICT`) gives `host`, `port` and `gym_ray_url`."""
    import uvicorn

    name = os.environ["NEMO_GYM_CONFIG_PATH"]
    block = yaml.safe_load(os.environ["NEMO_GYM_CONFIG_DICT"])[name]["resources_servers"]["gym_ray"]
    if not block.get("gym_ray_url"):
        sys.exit(f"{name}.resources_servers.gym_ray.gym_ray_url: missing (the env's Serve URL)")
    uvicorn.run(forwarding_app(block["gym_ray_url"]), host=block["host"], port=int(block["port"]),
                log_level="warning", access_log=False)


def nemo_gym_config(env_urls: dict[str, str], model_server: str = "policy_model") -> dict:
    """NeMo Gym config blocks for gym_ray envs served at `env_urls` (env -> Serve URL): a resources server
    `<env>` (the forwarder) and a `<env>_simple_agent` on NeMo Gym's own simple_agent."""
    blocks: dict = {}
    for name, url in env_urls.items():
        blocks[name] = {"resources_servers": {"gym_ray": {"entrypoint": "app.py", "gym_ray_url": url,
                                                          "domain": "other"}}}
        blocks[f"{name}_simple_agent"] = {"responses_api_agents": {"simple_agent": {
            "entrypoint": "app.py",
            "resources_server": {"type": "resources_servers", "name": name},
            "model_server": {"type": "responses_api_models", "name": model_server},
        }}}
    return blocks


def _server_dir(out: Path, rel: Path, app: str) -> None:
    """A NeMo Gym server directory whose venv is the interpreter gym_ray runs in."""
    server = out / rel
    server.mkdir(parents=True, exist_ok=True)
    (server / "app.py").write_text(app, encoding="utf-8")
    (server / "requirements.txt").write_text("gym-ray\n", encoding="utf-8")
    venv = out / "venvs" / rel / ".venv"
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not venv.exists():
        venv.symlink_to(Path(sys.prefix), target_is_directory=True)


def write_nemo_gym_dir(env_urls: dict[str, str], out: str | Path, model_server: str = "policy_model",
                       agent_servers: dict[str, str | Path] | None = None) -> Path:
    """Write `out/config.yaml` and the server directories it names; returns the config path.

    `agent_servers` (NeMo Gym agent name -> gym_ray run YAML) adds gym_ray `/run` agent servers
    (`gym_ray.integrations.nemo_gym.agent_server`). NeMo Gym runs each server in a venv of its own: with
    `skip_venv_if_present: true` and `uv_venv_dir: <dir>`, gym_ray's are `<dir>/<server dir>/.venv`, which
    this links to the interpreter gym_ray runs in (NeMo Gym then builds venvs only for its own servers)."""
    out = Path(out)
    _server_dir(out, SERVER_DIR, APP)
    agents = {name: {"responses_api_agents": {"gym_ray": {"entrypoint": "app.py",
                                                          "gym_ray_config": str(Path(cfg).absolute())}}}
              for name, cfg in (agent_servers or {}).items()}
    if agents:
        _server_dir(out, AGENT_DIR, AGENT_APP)
    config = {"skip_venv_if_present": True, "uv_venv_dir": str((out / "venvs").absolute()),
              **nemo_gym_config(env_urls, model_server), **agents}
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
