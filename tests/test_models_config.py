"""How a `vllm` ModelConfig becomes a ray.serve.llm LLMConfig (no engine started)."""

from __future__ import annotations

import pytest

from gym_ray.config import AutoscalingConfig, ModelConfig


@pytest.fixture(scope="module")
def llm_config_for():
    from gym_ray.models.vllm_server import llm_config_for

    return llm_config_for


def test_cpu_defaults(llm_config_for, default_model_path):
    from gym_ray.models.vllm_server import GymLLMServer

    llm = llm_config_for(ModelConfig(kind="vllm", name="p", accelerator="cpu", kv_cache_gib=3,
                                     engine_kwargs={"max_model_len": 1024}))
    assert llm.model_loading_config.model_id == "p"
    assert llm.model_loading_config.model_source == default_model_path
    assert llm.accelerator_config.kind == "cpu"
    assert llm.placement_group_config["bundles"] == [{"CPU": 1}]
    assert llm.engine_kwargs == {"disable_log_stats": True, "dtype": "float32", "enforce_eager": True,
                                 "max_model_len": 1024}
    assert llm.runtime_env["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert llm.deployment_config["ray_actor_options"] == {"num_cpus": 0}
    assert llm.deployment_config["num_replicas"] == 1 and "request_router_config" not in llm.deployment_config
    assert llm.server_cls is GymLLMServer


def test_gpu_defaults_and_affinity_with_replicas(llm_config_for):
    llm = llm_config_for(ModelConfig(kind="vllm", accelerator="gpu", engine_kwargs={"dtype": "bfloat16"},
                                     autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=4)))
    assert llm.accelerator_config.kind == "gpu"
    assert llm.engine_kwargs == {"disable_log_stats": True, "dtype": "bfloat16"}
    assert not llm.runtime_env or "VLLM_CPU_KVCACHE_SPACE" not in llm.runtime_env.get("env_vars", {})
    assert llm.deployment_config["autoscaling_config"]["max_replicas"] == 4
    router = llm.deployment_config["request_router_config"]["request_router_class"]
    assert router == "gym_ray.serving.routing:PinnedRouter"


def test_deployment_names():
    from gym_ray.models.deploy import policy_deployment_name

    assert policy_deployment_name(ModelConfig(kind="vllm", name="org/m.v1")) == "GymLLMServer:org--m_v1"
    assert policy_deployment_name(ModelConfig(kind="scripted", replies=["x"])) == "ScriptedPolicy"
    assert policy_deployment_name(ModelConfig(kind="openai", base_url="http://x/v1")) is None
