"""Deploying a policy (`ModelConfig`) onto the running Ray + Serve, and taking it down again.

The caller owns `ray.init` and `serve.start` (HTTP options are cluster-wide and fixed at Serve's start);
this module only adds or removes one Serve application per policy.
"""

from __future__ import annotations

from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from gym_ray import compat
from gym_ray.config import HOT_PATH_LOGGING, ModelConfig
from gym_ray.models.default_model import resolve_model_path
from gym_ray.models.names import (
    SCRIPTED_DEPLOYMENT,
    policy_deployment_name,
    serve_options,
    tokenizer_path_for,
)


class PolicyEndpoint(BaseModel):
    """Where a deployed policy can be reached: by handle (app + deployment) and over OpenAI HTTP."""

    kind: str
    app_name: str
    deployment: str | None  # the deployment that `PolicyClient.generate` calls by handle
    model: str  # the `model` field of OpenAI requests
    base_url: str | None  # OpenAI base URL (".../v1"); None when the app has no route prefix
    tokenizer_path: str | None


def build_policy_app(cfg: ModelConfig) -> Application:
    """The Serve application for a hosted policy kind (`scripted` or `vllm`)."""
    if cfg.kind == "scripted":
        from gym_ray.models.scripted_server import ScriptedServer

        dep = serve.deployment(ScriptedServer, name=SCRIPTED_DEPLOYMENT, ray_actor_options={"num_cpus": 0},
                               health_check_timeout_s=60, logging_config=HOT_PATH_LOGGING, **serve_options(cfg))
        return dep.bind(cfg.model_dump(), resolve_model_path(cfg.model))
    if cfg.kind == "vllm":
        from gym_ray.models.vllm_server import build_vllm_app

        return build_vllm_app(cfg)
    raise ValueError(f"model.kind {cfg.kind!r} is not hosted on Serve (an 'openai' model is external)")


def serve_http_base(route_prefix: str) -> str:
    """http://host:port<prefix> of the running Serve proxy."""
    http = compat.serve_http_options()
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host
    return f"http://{host}:{http.port}{route_prefix.rstrip('/')}"


def deploy_policy(cfg: ModelConfig, app_name: str, route_prefix: str | None = None) -> PolicyEndpoint:
    """Deploy `cfg` as Serve app `app_name` (blocks until it runs) and say how to reach it.

    `route_prefix=None` makes the policy reachable by handle only; give e.g. "/policy" for OpenAI HTTP
    at <serve>/policy/v1. Nothing is deployed for an external `openai` model nor a `hosting: local`
    scripted one; their endpoint info is returned. A replica that fails to start raises `DeploymentError`
    with its exception.
    """
    if cfg.kind == "openai":
        return PolicyEndpoint(kind=cfg.kind, app_name=app_name, deployment=None, model=cfg.model or cfg.name,
                              base_url=cfg.base_url, tokenizer_path=tokenizer_path_for(cfg))
    if cfg.kind == "scripted" and cfg.hosting == "local":
        return PolicyEndpoint(kind=cfg.kind, app_name=app_name, deployment=None, model=cfg.name, base_url=None,
                              tokenizer_path=tokenizer_path_for(cfg))
    try:
        serve.run(build_policy_app(cfg), name=app_name, route_prefix=route_prefix)
    except RuntimeError as e:  # Serve says only "Failed to update the deployments"; say what the replica said
        from gym_ray.serving.failures import DeploymentError, failure_cause

        raise DeploymentError(f"model {app_name!r}: deployment failed: {failure_cause(app_name, e)}") from None
    return PolicyEndpoint(
        kind=cfg.kind,
        app_name=app_name,
        deployment=policy_deployment_name(cfg),
        model=cfg.name,
        base_url=None if route_prefix is None else serve_http_base(route_prefix) + "/v1",
        tokenizer_path=tokenizer_path_for(cfg),
    )


def delete_policy(app_name: str) -> None:
    """Remove the policy's Serve app (its replicas and engines); a missing app is not an error."""
    compat.delete_apps([app_name])
