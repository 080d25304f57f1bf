"""The `openai` policy kind: any external OpenAI-compatible endpoint, reached over HTTP.

`generate` uses the completions API with a token-id prompt and vLLM's `return_token_ids` (an endpoint
that cannot return token ids is refused: without them a rollout is not token-exact). `chat` sends only
standard fields, so it also works against hosted APIs. The API key is read from the environment variable
named by `model.api_key_env` when the HTTP client is built; it is never stored in the pickled client nor
put in any error message.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import httpx

from gym_ray.clients import Generation
from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.redact import register_secret
from gym_ray.types import Message, ToolSpec

RETRY_STATUS = {408, 409, 429}  # plus every 5xx
MAX_BACKOFF_S = 30.0


class PolicyError(RuntimeError):
    """A policy call failed for good (after retries where retrying made sense)."""


class PolicyHTTPError(PolicyError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PolicyTimeoutError(PolicyError):
    pass


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(float(retry_after), MAX_BACKOFF_S)
        except ValueError:
            pass
    return min(0.25 * 2**attempt, MAX_BACKOFF_S) * (0.5 + random.random())


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        return str(err.get("message", err) if isinstance(err, dict) else err)[:500]
    except ValueError:
        return resp.text[:500]


class OpenAIPolicyClient:
    """PolicyClient over an OpenAI-compatible HTTP endpoint, with a concurrency cap and retries."""

    def __init__(self, cfg: ModelConfig, tokenizer_path: str):
        if not cfg.base_url:
            raise ValueError("model.base_url is required when kind is 'openai'")
        self.cfg = cfg
        self.model_name = cfg.model or cfg.name
        self._tokenizer_path = tokenizer_path
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_http": None, "_sem": None, "_loop": None}

    def __repr__(self) -> str:
        return f"OpenAIPolicyClient(base_url={self.cfg.base_url!r}, model={self.model_name!r})"

    def tokenizer_path(self) -> str:
        return self._tokenizer_path

    def _client(self) -> httpx.AsyncClient:
        """One HTTP client per event loop (httpx pools are bound to the loop that made them)."""
        if self._http is None or self._loop is not asyncio.get_running_loop():
            headers = {}
            if self.cfg.api_key_env:
                key = os.environ.get(self.cfg.api_key_env)
                if not key:
                    raise PolicyError(f"model.api_key_env: environment variable {self.cfg.api_key_env} is not set")
                register_secret(key)  # an endpoint that echoes it in an error body must not leak it to rows
                headers["Authorization"] = f"Bearer {key}"
            limits = httpx.Limits(max_connections=self.cfg.max_concurrency,
                                  max_keepalive_connections=self.cfg.max_concurrency)
            self._http = httpx.AsyncClient(base_url=self.cfg.base_url.rstrip("/"), headers=headers,
                                           timeout=self.cfg.timeout_s, limits=limits)
            self._sem = asyncio.Semaphore(self.cfg.max_concurrency)
            self._loop = asyncio.get_running_loop()
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def post(self, path: str, body: dict[str, Any]) -> dict:
        """POST with retries on timeouts, connection errors, 408/409/429 and 5xx; 4xx fail at once."""
        http = self._client()
        url = self.cfg.base_url.rstrip("/") + path
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            retry_after = None
            try:
                async with self._sem:
                    resp = await http.post(path, json=body)
            except httpx.TimeoutException:
                last = f"POST {url}: no answer within model.timeout_s={self.cfg.timeout_s}s"
                exc: type[PolicyError] = PolicyTimeoutError
            except httpx.TransportError as e:
                last = f"POST {url}: {type(e).__name__}: {e}"
                exc = PolicyError
            else:
                if resp.status_code < 400:
                    return resp.json()
                msg = f"POST {url}: HTTP {resp.status_code}: {_error_message(resp)}"
                if resp.status_code < 500 and resp.status_code not in RETRY_STATUS:
                    raise PolicyHTTPError(resp.status_code, msg)
                last, exc, retry_after = msg, PolicyError, resp.headers.get("retry-after")
            if attempt < self.cfg.max_retries:
                await asyncio.sleep(_backoff(attempt, retry_after))
        raise exc(f"{last} (gave up after {self.cfg.max_retries + 1} attempts)")

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingConfig, session_id: str | None = None
    ) -> Generation:
        body: dict[str, Any] = {
            "model": self.model_name,
            "prompt": list(prompt_token_ids),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "logprobs": 1,
            "return_token_ids": True,
        }
        if sampling.top_k != -1:
            body["top_k"] = sampling.top_k
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        out = await self.post("/completions", body)
        try:
            choice = out["choices"][0]
            ids = choice["token_ids"]
            lps = choice["logprobs"]["token_logprobs"]
        except (KeyError, IndexError, TypeError) as e:
            raise PolicyError(
                f"{self.cfg.base_url}/completions: the answer lacks {e} (token ids need a vLLM >= 0.10.2 endpoint "
                "that honours return_token_ids, and logprobs)"
            ) from None
        if ids is None:
            raise PolicyError(f"{self.cfg.base_url}/completions did not return token ids (return_token_ids)")
        return Generation(
            token_ids=ids,
            logprobs=[0.0 if lp is None else lp for lp in lps],
            finish_reason=choice.get("finish_reason") or "abort",
            model=out.get("model", self.model_name),
            policy_version=out.get("policy_version", 0),
            text=choice.get("text", ""),
        )

    async def chat(self, messages: list[Message], tools: list[ToolSpec] | None, sampling: SamplingConfig) -> dict:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [m.to_openai() if isinstance(m, Message) else m for m in messages],
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        return await self.post("/chat/completions", body)
