"""Bring up (and take down) what a run config describes: Ray, Serve, the policy model(s), the environments.

The CLI's `run`, `serve` and `collect` share it. Serve applications are named after the model
(`model.name`, default "policy"; `models.<key>` for extra ones such as a judge) and the environment
(its key under `envs`), so `gym-ray collect` finds what `gym-ray serve` started.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from gym_ray import compat
from gym_ray.config import ModelConfig, RunConfig


@dataclass
class Deployment:
    """What is running: Serve app names by role, and URLs to print."""

    apps: dict[str, str] = field(default_factory=dict)  # model name / env name -> Serve app name
    urls: dict[str, str] = field(default_factory=dict)
    started_ray: bool = False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def connect_ray(cfg: RunConfig, address: str | None) -> bool:
    """Join `address` (or `ray.address`, or $RAY_ADDRESS inside `ray job submit`), else start a private
    local Ray. Returns whether this process started it."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already chose the cluster
        return False
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS")
    kv_cache_gib = cfg.model.kv_cache_gib if cfg.model.kind == "vllm" else 1
    env_vars = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), **cfg.ray.env_vars}
    for key in _job_env_vars():  # inside `ray job submit`: Ray refuses a driver env var the job already sets
        env_vars.pop(key, None)
    if address:
        ray.init(address=address, namespace=cfg.ray.namespace, runtime_env={"env_vars": env_vars},
                 log_to_driver=False)
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on this host only
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, namespace=cfg.ray.namespace,
             runtime_env={"env_vars": env_vars}, log_to_driver=False, include_dashboard=True)
    return True


def _job_env_vars() -> dict:
    """The env vars of the `ray job submit --runtime-env-json` this driver runs in (none outside a job);
    they win over the run config's, as the job's submitter chose them for this cluster."""
    import json

    try:
        job = json.loads(compat.job_config_json() or "{}")
        return dict((job.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, TypeError, AttributeError):
        return {}


def start_serve(cfg: RunConfig) -> str:
    """Start Serve's HTTP proxy (or reuse a running one); a busy configured port falls back to a free one."""
    from ray import serve

    http = compat.serve_http_options()
    if http is None:
        host, port = cfg.ray.http_host, cfg.ray.http_port
        if not _port_free(host, port):
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        serve.start(http_options={"host": host, "port": port})
        http = compat.serve_http_options()
    return f"http://{'127.0.0.1' if http.host in ('0.0.0.0', '') else http.host}:{http.port}"


def dashboard_url() -> str | None:
    url = compat.dashboard_address()
    return f"http://{url}" if url and not url.startswith("http") else url


def _policies(cfg: RunConfig) -> dict[str, ModelConfig]:
    return {cfg.model.name: cfg.model, **{k: m for k, m in cfg.models.items() if k != cfg.model.name}}


def _for_engine(m: ModelConfig) -> ModelConfig:
    """The engine opens `chat_template` as a file: give it the file of a template the agents ship by name
    (e.g. `chatml_tools`), so its OpenAI chat endpoint renders exactly what the agents render."""
    from gym_ray.agents.tokenizer import SHIPPED_TEMPLATES

    if m.chat_template in SHIPPED_TEMPLATES:
        return m.model_copy(update={"chat_template": str(SHIPPED_TEMPLATES[m.chat_template])})
    return m


def deploy_all(cfg: RunConfig, *, http: bool = True) -> Deployment:
    """Deploy the policy, extra models and every env with `hosting: serve`; wait until they run.

    When one fails (`DeploymentError`, naming it and its replica's exception), the apps deployed so far
    and the failed one are deleted again: a failed run leaves nothing behind on a shared cluster. The envs
    start side by side (`deploy_envs`).
    """
    from gym_ray.models.deploy import deploy_policy
    from gym_ray.resources.serve import deploy_envs, env_route
    from gym_ray.serving.failures import DeploymentError

    dep = Deployment()
    base = start_serve(cfg) if http else None
    served = {n: e for n, e in cfg.envs.items() if e.hosting == "serve"}
    name = ""
    try:
        for name, mcfg in _policies(cfg).items():
            endpoint = deploy_policy(_for_engine(mcfg), app_name=name, route_prefix=f"/{name}")
            if mcfg.kind != "openai":  # an external endpoint: nothing deployed
                dep.apps[name] = name
            if endpoint.base_url:
                dep.urls[f"model {name} (OpenAI)"] = endpoint.base_url
        name = ""
        for name in deploy_envs(served):
            dep.apps[name] = name
            if base:
                dep.urls[f"env {name}"] = f"{base}{env_route(name, served[name])}"
    except BaseException as e:
        # a failed policy's app exists, in DEPLOY_FAILED; so may any env's (deleting a missing app is a no-op)
        failed = [name] if isinstance(e, DeploymentError) and name else []
        teardown(Deployment(apps={n: n for n in [*dep.apps, *failed, *served]}))
        raise
    return dep


def running_apps(cfg: RunConfig) -> dict[str, str]:
    """Apps of this config that are already RUNNING on the connected cluster (for `gym-ray collect`)."""
    from ray import serve

    from gym_ray.resources.serve import is_sticky

    status = serve.status().applications
    wanted = [*(n for n, m in _policies(cfg).items() if m.kind != "openai"),
              *(n for n, e in cfg.envs.items() if e.hosting == "serve")]
    missing = [n for n in wanted if n not in status or status[n].status != "RUNNING"]
    if missing:
        raise RuntimeError(f"not running on this cluster: Serve app(s) {missing}; start them with `gym-ray serve`")
    for n, e in cfg.envs.items():
        if e.hosting != "serve" or is_sticky(e):
            continue
        replicas = sum(d.replica_states.get("RUNNING", 0) for d in status[n].deployments.values())
        if replicas > 1:  # unrouted, a session's calls would reach replicas without it
            raise RuntimeError(
                f"envs.{n}: Serve app {n!r} runs {replicas} replicas but the run config states neither "
                f"num_replicas > 1 nor autoscaling; set envs.{n}.num_replicas so each session's calls reach "
                "the replica holding it"
            )
    return {n: n for n in wanted}


def teardown(dep: Deployment) -> None:
    compat.delete_apps(list(dict.fromkeys(dep.apps.values())))
