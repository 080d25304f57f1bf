"""The `vllm` policy kind: `ray.serve.llm` (OpenAI ingress, routing, autoscaling, LoRA, RL hooks) with
our `LLMServer` subclass adding what the training path needs and serve.llm lacks:

- `generate(prompt_token_ids, sampling)`: token-in/token-out straight on the engine (no OpenAI request
  or response objects on the hot path), final output only, sampled-token logprobs;
- a policy version, stamped on every generation (token path, and the body of every non-streaming
  OpenAI response as `policy_version`) and set by the trainer after each weight update.

CPU machines get working defaults: CPU accelerator, one CPU bundle per replica, zero-CPU replica and
ingress actors, an explicit KV-cache size and OMP thread binding, float32 and eager mode.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from ray.serve.llm import LLMConfig, LLMServingArgs, build_openai_app
from ray.serve.llm.deployment import LLMServer

from gym_ray.compat import engine_client
from gym_ray.config import ModelConfig
from gym_ray.models.default_model import resolve_model_path
from gym_ray.models.names import VLLM_SERVER_CLASS, serve_options


def engine_input(prompt_token_ids: list[int]) -> Any:
    """A token prompt as vLLM's already-rendered engine input (skips the deprecated raw-prompt path)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:  # vLLM before 0.30 (the CUDA build Ray 2.60 pins) takes a TokensPrompt
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=prompt_token_ids)
    return tokens_input(prompt_token_ids)


class GymLLMServer(LLMServer):
    """serve.llm's LLMServer plus a token-level `generate` and a policy version."""

    async def __init__(self, llm_config: LLMConfig, **kwargs: Any):
        self._policy_version = 0
        self._model_id = llm_config.model_id
        await super().__init__(llm_config, **kwargs)

    async def generate(self, prompt_token_ids: list[int], sampling: dict) -> dict:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            temperature=sampling.get("temperature", 1.0),
            top_p=sampling.get("top_p", 1.0),
            top_k=sampling.get("top_k", -1),
            max_tokens=sampling.get("max_tokens", 256),
            seed=sampling.get("seed"),
            stop=sampling.get("stop") or None,
            logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        version = self._policy_version
        final = None
        async for out in engine_client(self).generate(
            engine_input(list(prompt_token_ids)), params, uuid.uuid4().hex
        ):
            final = out
        if final is None:  # aborted (pause with mode="abort") before any output
            return {"token_ids": [], "logprobs": [], "finish_reason": "abort", "model": self._model_id,
                    "policy_version": version, "text": ""}
        c = final.outputs[0]
        ids = list(c.token_ids)
        return {
            "token_ids": ids,
            "logprobs": [lp[t].logprob for t, lp in zip(ids, c.logprobs, strict=True)],
            "finish_reason": c.finish_reason or "abort",
            "model": self._model_id,
            "policy_version": version,
            "text": c.text,
            # what the engine actually ran on, so callers can check their transcript against it
            "extra": {"prompt_token_ids": list(final.prompt_token_ids or [])},
        }

    async def chat_messages(self, messages: list[dict], tools: list[dict] | None, sampling: dict) -> dict:
        """`PolicyClient.chat` by handle: vLLM's own chat serving, answered as a dict with token ids."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        fields: dict[str, Any] = {
            "model": self._model_id, "messages": messages, "max_tokens": sampling.get("max_tokens"),
            "temperature": sampling.get("temperature"), "top_p": sampling.get("top_p"),
            "seed": sampling.get("seed"), "stop": sampling.get("stop") or None,
            "logprobs": True, "return_token_ids": True, "stream": False,
        }
        if tools:
            fields["tools"] = tools
        if sampling.get("top_k", -1) != -1:
            fields["top_k"] = sampling["top_k"]
        outputs = [out async for out in await self.chat(ChatCompletionRequest(**fields))]
        last = outputs[-1] if outputs else None
        if not hasattr(last, "choices"):  # None or an ErrorResponse
            raise ValueError(f"chat request failed: {last.model_dump_json() if last else 'no response'}")
        return last.model_dump()

    async def chat(self, request, raw_request_info=None):
        return self._stamped(await super().chat(request, raw_request_info), self._policy_version)

    async def completions(self, request, raw_request_info=None):
        return self._stamped(await super().completions(request, raw_request_info), self._policy_version)

    @staticmethod
    async def _stamped(outputs, version: int):
        """OpenAI responses allow extra fields: a whole (non-streaming) response carries the version it
        was generated under, read when the request arrived, like `generate`."""
        async for out in outputs:
            if hasattr(out, "choices"):  # not an error, nor a list of stream chunks
                out.policy_version = version
            yield out

    async def set_policy_version(self, version: int) -> int:
        self._policy_version = version
        return version

    async def get_policy_version(self) -> int:
        return self._policy_version


# serve.llm names the deployment after this class; handles find it by names.llm_deployment_name.
assert GymLLMServer.__name__ == VLLM_SERVER_CLASS


def _on_gpu(cfg: ModelConfig) -> bool:
    if cfg.accelerator != "auto":
        return cfg.accelerator == "gpu"
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def llm_config_for(cfg: ModelConfig) -> LLMConfig:
    """Our defaults for the machine at hand, then `cfg.engine_kwargs` on top."""
    gpu = _on_gpu(cfg)
    engine_kwargs: dict[str, Any] = {"disable_log_stats": True}
    if not gpu:
        # float32 is the faster dtype on these AVX2-only CPUs (measured against bfloat16); eager skips inductor.
        engine_kwargs.update(dtype="float32", enforce_eager=True)
    if cfg.chat_template:
        engine_kwargs["chat_template"] = cfg.chat_template
    engine_kwargs.update(cfg.engine_kwargs)
    deployment = {**serve_options(cfg), "health_check_timeout_s": 120, "ray_actor_options": {"num_cpus": 0}}
    fields: dict[str, Any] = {
        "model_loading_config": {"model_id": cfg.name, "model_source": resolve_model_path(cfg.model)},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment,
        "log_engine_metrics": False,
        "server_cls": GymLLMServer,
    }
    if gpu:
        fields["accelerator_config"] = {"kind": "gpu"}
    else:
        fields["accelerator_config"] = {"kind": "cpu"}
        fields["placement_group_config"] = {"bundles": [{"CPU": 1}]}
        fields["runtime_env"] = {"env_vars": {
            "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        }}
    return LLMConfig(**fields)


def build_vllm_app(cfg: ModelConfig):
    """serve.llm's OpenAI app (zero-CPU ingress) over one GymLLMServer deployment."""
    args = LLMServingArgs(
        llm_configs=[llm_config_for(cfg)],
        ingress_deployment_config={"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
    )
    return build_openai_app(args)
