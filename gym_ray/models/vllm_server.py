"""The `vllm` policy kind: `ray.serve.llm` (OpenAI ingress, routing, autoscaling, LoRA, RL hooks) with
our `LLMServer` subclass adding what the training path needs and serve.llm lacks:

- `generate(prompt_token_ids, sampling)`: token-in/token-out straight on the engine (no OpenAI request
  or response objects on the hot path), final output only, sampled-token logprobs;
- a policy version, stamped on every generation (token path, and the body of every non-streaming
  OpenAI response as `policy_version`) and set by the trainer after each weight update;
- weight updates while generating (gym_ray.models.updates): in-flight token-level generations finish,
  are cut (vLLM's public `abort`) and continued from the same token prefix under the new weights, or are
  dropped, while new ones wait for the update.

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
from gym_ray.models.updates import Call, Part, WeightUpdates, merged


def engine_input(prompt_token_ids: list[int]) -> Any:
    """A token prompt as vLLM's already-rendered engine input (skips the deprecated raw-prompt path)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:  # vLLM before 0.30 (the CUDA build Ray 2.60 pins) takes a TokensPrompt
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=prompt_token_ids)
    return tokens_input(prompt_token_ids)


class GymLLMServer(LLMServer):
    """serve.llm's LLMServer plus a token-level `generate`, a policy version, and weight updates while
    generating (`begin_weight_update` / `end_weight_update`, gym_ray.models.updates)."""

    async def __init__(self, llm_config: LLMConfig, **kwargs: Any):
        self._updates = WeightUpdates()
        self._model_id = llm_config.model_id
        await super().__init__(llm_config, **kwargs)

    async def generate(self, prompt_token_ids: list[int], sampling: dict) -> dict:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        def params(max_tokens: int) -> SamplingParams:
            return SamplingParams(
                temperature=sampling.get("temperature", 1.0),
                top_p=sampling.get("top_p", 1.0),
                top_k=sampling.get("top_k", -1),
                max_tokens=max_tokens,
                seed=sampling.get("seed"),
                stop=sampling.get("stop") or None,
                logprobs=0,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )

        async def run(prompt: list[int], max_tokens: int, call: Call) -> Part:
            call.request_id = uuid.uuid4().hex
            final = None
            async for out in engine_client(self).generate(engine_input(prompt), params(max_tokens), call.request_id):
                final = out
            if final is None:  # aborted before any output
                return Part([], [], call.version, "abort")
            c = final.outputs[0]
            ids = list(c.token_ids)
            # what the engine actually ran on, so callers can check their transcript against it
            return Part(ids, [lp[t].logprob for t, lp in zip(ids, c.logprobs, strict=True)], call.version,
                        c.finish_reason or "abort", c.text, {"prompt_token_ids": list(final.prompt_token_ids or [])})

        parts = await self._updates.generate(run, list(prompt_token_ids), sampling.get("max_tokens", 256))
        return merged(parts, self._model_id)

    async def begin_weight_update(self, mode: str) -> int:
        """`finish`, `abort` or `drop` the token-level generations in flight (vLLM's `abort` cuts them), with
        new ones held until `end_weight_update`; returns once none runs, with how many were cut. Requests
        on the OpenAI routes are held and finished, never cut."""
        return await self._updates.begin(mode, self._abort)

    async def _abort(self, calls: list[Call]) -> None:
        await engine_client(self).abort([c.request_id for c in calls if c.request_id])

    async def end_weight_update(self, version: int) -> int:
        self._updates.end(version)
        return version

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
        return await self._gated(super().chat, request, raw_request_info)

    async def completions(self, request, raw_request_info=None):
        return await self._gated(super().completions, request, raw_request_info)

    async def _gated(self, route, request, raw_request_info):
        """An OpenAI route's request through the weight-update gate (held during an update, then finished)."""
        call = await self._updates.enter()
        try:
            outputs = await route(request, raw_request_info)
        except BaseException:
            self._updates.leave(call)
            raise
        return self._stamped(outputs, call, self._updates)

    @staticmethod
    async def _stamped(outputs, call: Call, updates: WeightUpdates):
        """OpenAI responses allow extra fields: a whole (non-streaming) response carries the version it
        was generated under, read when the request passed the weight-update gate, like `generate`."""
        try:
            async for out in outputs:
                if hasattr(out, "choices"):  # not an error, nor a list of stream chunks
                    out.policy_version = call.version
                yield out
        finally:
            updates.leave(call)

    async def set_policy_version(self, version: int) -> int:
        self._updates.version = version
        return version

    async def get_policy_version(self) -> int:
        return self._updates.version


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
