"""Policy and environment clients whose failures say whose they are: infrastructure errors pass through
(the episode is re-run), everything else becomes `EnvCallError` / `PolicyCallError` (a status row)."""

from __future__ import annotations

import asyncio

from gym_ray.types import Message, ToolCall


class EnvCallError(RuntimeError):
    """An environment call failed (not a tool error, which comes back as text): status `env_error`."""


class PolicyCallError(RuntimeError):
    """The policy refused or failed a call (e.g. prompt too long): status `model_error`."""


class _Guarded:
    """Delegates calls, letting infrastructure errors through and tagging every other failure as `error`."""

    error: type[Exception]

    def __init__(self, inner, infra: tuple[type[BaseException], ...]):
        self._inner = inner
        self._passthrough = (*infra, asyncio.CancelledError, EnvCallError, PolicyCallError)

    async def _call(self, name: str, *args):
        try:
            return await getattr(self._inner, name)(*args)
        except self._passthrough:
            raise
        except Exception as e:
            raise self.error(f"{name}: {type(e).__name__}: {e}") from e


class GuardedEnv(_Guarded):
    """An EnvClient whose non-infrastructure failures are `EnvCallError`s."""

    error = EnvCallError

    async def tools(self):
        return await self._call("tools")

    async def seed_session(self, session_id: str, task):
        return await self._call("seed_session", session_id, task)

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        return await self._call("call_tool", session_id, call)

    async def reset(self, session_id: str, task) -> str:
        return await self._call("reset", session_id, task)

    async def step(self, session_id: str, action: str):
        return await self._call("step", session_id, action)

    async def verify(self, session_id: str, task, messages: list[Message]):
        return await self._call("verify", session_id, task, messages)

    async def close_session(self, session_id: str) -> None:
        return await self._call("close_session", session_id)

    async def fork_session(self, session_id: str, new_session_ids: list[str]) -> None:
        return await self._call("fork_session", session_id, new_session_ids)


class GuardedPolicy(_Guarded):
    """A PolicyClient whose non-infrastructure failures are `PolicyCallError`s."""

    error = PolicyCallError

    def __init__(self, inner, infra: tuple[type[BaseException], ...]):
        super().__init__(inner, infra)
        self.model_name = inner.model_name

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        return await self._call("generate", prompt_token_ids, sampling, session_id)

    async def chat(self, messages, tools, sampling):
        return await self._call("chat", messages, tools, sampling)

    def tokenizer_path(self) -> str:
        return self._inner.tokenizer_path()

    def __getattr__(self, name):
        return getattr(self._inner, name)
