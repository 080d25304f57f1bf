"""The scripted policy as a Serve deployment: token-level methods for handles, OpenAI routes for HTTP.

It carries the same trainer hooks as the vLLM server (pause/resume, collective_rpc, policy version, weight
updates while generating), so a trainer loop can be exercised end to end without an engine.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve

from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.models.openai_format import (
    chat_response,
    completion_response,
    models_response,
    sampling_from_openai,
)
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.serving.batch import BatchedCalls

app = FastAPI(title="gym_ray scripted policy")


def _error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


@serve.ingress(app)
class ScriptedServer(BatchedCalls):
    def __init__(self, cfg: dict, tokenizer_path: str):
        self.cfg = ModelConfig.model_validate(cfg)
        self.policy = ScriptedPolicy(self.cfg, tokenizer_path)
        self._running = asyncio.Event()
        self._running.set()

    # -- token level (handles) -------------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], sampling: dict) -> dict:
        await self._running.wait()
        gen = await self.policy.generate(prompt_token_ids, SamplingConfig.model_construct(**sampling))
        return gen.__dict__

    async def chat_messages(self, messages: list[dict], tools: list[dict] | None, sampling: dict) -> dict:
        await self._running.wait()
        return await self.policy.chat(messages, tools, SamplingConfig.model_validate(sampling))

    # -- trainer hooks ----------------------------------------------------------------------------
    async def pause(self, **_: Any) -> None:
        """New generations wait until `resume` (a script has nothing in flight to abort)."""
        self._running.clear()

    async def resume(self, **_: Any) -> None:
        self._running.set()

    async def is_paused(self) -> bool:
        return not self._running.is_set()

    async def collective_rpc(self, method: str, timeout: float | None = None, args: tuple = (),
                             kwargs: dict | None = None) -> list:
        """No engine workers behind a script: nothing to call, no results."""
        return []

    async def reset_prefix_cache(self) -> None:
        return None

    async def begin_weight_update(self, mode: str) -> int:
        """`finish`, `abort` or `drop` what generates (gym_ray.models.updates); returns how many were cut."""
        return await self.policy.updates.begin(mode)

    async def end_weight_update(self, version: int) -> int:
        self.policy.updates.end(version)
        return version

    async def set_policy_version(self, version: int) -> int:
        self.policy.updates.version = version
        return version

    async def get_policy_version(self) -> int:
        return self.policy.updates.version

    async def check_health(self) -> None:
        return None

    # -- OpenAI HTTP ------------------------------------------------------------------------------
    async def _chat(self, prompt: list[int], sampling: SamplingConfig, *, logprobs: bool, ids: bool) -> dict:
        await self._running.wait()
        gen = await self.policy.generate(prompt, sampling)
        return chat_response(gen, prompt, self.policy.token_strings(gen.token_ids), with_logprobs=logprobs, with_ids=ids)

    def _check(self, body: dict) -> JSONResponse | None:
        if body.get("model") not in (None, self.cfg.name):
            return _error(404, f"The model `{body.get('model')}` does not exist; this endpoint serves "
                               f"`{self.cfg.name}`.", "NotFoundError")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by the scripted policy")
        if (body.get("n") or 1) != 1:
            return _error(400, "only n=1 is supported by the scripted policy")
        return None

    @app.get("/v1/models")
    async def http_models(self) -> dict:
        return models_response(self.cfg.name)

    @app.post("/v1/chat/completions")
    async def http_chat(self, request: Request):
        body = await request.json()
        if (bad := self._check(body)) is not None:
            return bad
        try:
            sampling = sampling_from_openai(body)
            prompt = self.policy.chat_prompt(body["messages"], body.get("tools"))
        except (ValidationError, KeyError, TypeError, ValueError) as e:
            return _error(400, f"invalid chat request: {e}")
        return await self._chat(prompt, sampling, logprobs=bool(body.get("logprobs")),
                                ids=bool(body.get("return_token_ids")))

    @app.post("/v1/completions")
    async def http_completions(self, request: Request):
        body = await request.json()
        if (bad := self._check(body)) is not None:
            return bad
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list | str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt = self.policy.tokenizer.encode(prompt, add_special_tokens=False)
        if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return _error(400, "prompt: expected one string or one non-empty list of token ids")
        try:
            sampling = sampling_from_openai(body)
        except ValidationError as e:
            return _error(400, f"invalid completions request: {e}")
        await self._running.wait()
        gen = await self.policy.generate(prompt, sampling)
        return completion_response(gen, prompt, self.policy.token_strings(gen.token_ids), logprobs=body.get("logprobs"),
                                   with_ids=bool(body.get("return_token_ids")))
