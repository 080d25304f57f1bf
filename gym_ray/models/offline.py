"""Generation straight through a vLLM engine in this process: the smoke check and the benchmark baseline."""

from __future__ import annotations

import os

from gym_ray.models.default_model import resolve_model_path


def cpu_engine_env(kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment a vLLM CPU engine needs here: an explicit KV-cache size, all cores for OMP threads."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
    }


def generate_chat(prompt: str, model: str | None = None, max_tokens: int = 32) -> dict:
    """Greedy reply to one user message; returns the text, the token ids and their logprobs."""
    for k, v in cpu_engine_env().items():
        os.environ.setdefault(k, v)
    from vllm import LLM, SamplingParams

    llm = LLM(model=resolve_model_path(model), dtype="bfloat16", max_model_len=2048, enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=0)
    out = llm.chat([{"role": "user", "content": prompt}], params, use_tqdm=False)[0].outputs[0]
    return {
        "text": out.text,
        "token_ids": list(out.token_ids),
        "logprobs": [lp[t].logprob for t, lp in zip(out.token_ids, out.logprobs, strict=True)],
        "finish_reason": out.finish_reason,
    }
