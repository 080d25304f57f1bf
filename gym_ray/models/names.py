"""Where a policy lives and what it loads: names and Serve options shared by the client, the deployer and
the vLLM server, kept here (no Serve or vLLM import) so imports among those three point one way.
"""

from __future__ import annotations

from gym_ray import compat
from gym_ray.config import ModelConfig
from gym_ray.models.default_model import resolve_model_path
from gym_ray.serving.batch import STICKY_ROUTER

SCRIPTED_DEPLOYMENT = "ScriptedPolicy"
VLLM_SERVER_CLASS = "GymLLMServer"  # the class name of gym_ray.models.vllm_server.GymLLMServer


def tokenizer_path_for(cfg: ModelConfig) -> str:
    """`model.tokenizer` if set; else the checkpoint for hosted kinds; else the embedded default model."""
    if cfg.tokenizer:
        return cfg.tokenizer
    if cfg.kind == "openai":
        return resolve_model_path(None)
    return resolve_model_path(cfg.model)


def llm_deployment_name(cfg: ModelConfig) -> str:
    """The engine deployment serve.llm makes for `cfg` (named after our server class and the model)."""
    return compat.llm_deployment_name(VLLM_SERVER_CLASS, cfg.name)


def policy_deployment_name(cfg: ModelConfig) -> str | None:
    """The deployment that `PolicyClient.generate` calls by handle; None for kinds not on Serve."""
    if cfg.kind == "scripted":
        return SCRIPTED_DEPLOYMENT
    if cfg.kind == "vllm":
        return llm_deployment_name(cfg)
    return None


def serve_options(cfg: ModelConfig) -> dict:
    """Serve options shared by our policy deployments: replicas or autoscaling, and session affinity."""
    opts: dict = {"max_ongoing_requests": cfg.max_ongoing_requests}
    if cfg.autoscaling is not None:
        opts["autoscaling_config"] = cfg.autoscaling.model_dump()
    else:
        opts["num_replicas"] = cfg.num_replicas
    if cfg.autoscaling is not None or cfg.num_replicas > 1:
        # The calls of one episode (same session id) land on one replica: its prefix cache holds the history.
        opts["request_router_config"] = {"request_router_class": STICKY_ROUTER}
    return opts
