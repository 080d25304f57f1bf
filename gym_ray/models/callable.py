"""A policy over a trainer's own engine: any async token-in/token-out callable becomes a `PolicyClient`.

On-policy trainers own the engine whose weights they update, so gym_ray's agents must generate through it.
The trainer adapters (VeRL's `server_manager.generate`, OpenRLHF's `llm_engine.generate`) wrap their engine
in a small async function and hand it here; the agents, environments and transcript stay the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from gym_ray.clients import Generation
from gym_ray.config import SamplingConfig
from gym_ray.types import Message, ToolSpec

TokenFn = Callable[[list[int], SamplingConfig, str], Awaitable[Generation]]
"""`fn(prompt_ids, sampling, request_id) -> Generation`: one generation on the trainer's engine."""


class CallablePolicy:
    """`PolicyClient` over `fn(prompt_ids, sampling, request_id) -> Generation`.

    Session affinity: every call of one episode passes the episode's session id as `request_id`, so a
    trainer's sticky routing (VeRL's load balancer keys on it) keeps the episode on one replica and its
    prefix cache warm. Sampling comes from the caller: trainer adapters pass the trainer's parameters to
    `EpisodeService.run(sampling=...)`, and `fn` may add what gym_ray's `SamplingConfig` has no field for
    (logprobs, repetition penalty) from the trainer's own request.
    """

    def __init__(self, fn: TokenFn, *, model_name: str, tokenizer_path: str):
        self._fn = fn
        self.model_name = model_name
        self._tokenizer_path = tokenizer_path

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingConfig, session_id: str | None = None
    ) -> Generation:
        gen = await self._fn(list(prompt_token_ids), sampling, session_id or uuid.uuid4().hex)
        if not isinstance(gen, Generation):
            raise TypeError(f"policy function returned {type(gen).__name__}, expected a Generation")
        if len(gen.logprobs) != len(gen.token_ids):
            raise ValueError(f"policy function returned {len(gen.token_ids)} token ids but "
                             f"{len(gen.logprobs)} logprobs")
        if not gen.model:
            gen.model = self.model_name
        return gen

    async def chat(self, messages: list[Message], tools: list[ToolSpec] | None, sampling: SamplingConfig) -> dict:
        """Not offered: a trainer's engine is reached token-in/token-out only (judges use `models:`)."""
        raise NotImplementedError(f"policy {self.model_name!r} wraps a token-in/token-out function; "
                                  "it has no chat endpoint")

    def tokenizer_path(self) -> str:
        return self._tokenizer_path
