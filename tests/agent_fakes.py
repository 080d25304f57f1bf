"""In-process fakes for agent tests: a policy that 'generates' chosen replies as token ids, and an env.

The fake policy records every prompt it was given and every id list it returned, so tests can check the
transcript against exactly what the engine saw.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gym_ray.agents.tokenizer import ChatTokenizer
from gym_ray.clients import Generation
from gym_ray.config import SamplingConfig
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult


@dataclass
class Reply:
    """One scripted model turn. `eos=False` ends without `<|im_end|>`; `char_tokens=True` uses a
    non-canonical tokenization (one token per character) that re-tokenizing the text would not give."""

    text: str
    eos: bool = True
    char_tokens: bool = False
    finish_reason: str | None = None
    raise_error: BaseException | None = None


class FakePolicy:
    model_name = "fake-model"

    def __init__(self, chat: ChatTokenizer, replies: list[Reply | str] | Callable[[int], Reply | str],
                 seed: int = 0, policy_version: int = 3):
        self.chat = chat
        self.replies = replies
        self.rng = random.Random(seed)
        self.policy_version = policy_version
        self.calls: list[tuple[list[int], list[int], list[float]]] = []
        self.samplings: list[SamplingConfig] = []
        self.session_ids: list[str | None] = []

    def _reply(self, i: int) -> Reply:
        r = self.replies(i) if callable(self.replies) else self.replies[min(i, len(self.replies) - 1)]
        return Reply(r) if isinstance(r, str) else r

    async def generate(self, prompt_token_ids, sampling, session_id=None) -> Generation:
        reply = self._reply(len(self.calls))
        if reply.raise_error is not None:
            raise reply.raise_error
        self.samplings.append(sampling)
        self.session_ids.append(session_id)
        if reply.char_tokens:
            ids = [t for ch in reply.text for t in self.chat.encode(ch)]
        else:
            ids = self.chat.encode(reply.text)
        finish = reply.finish_reason or "stop"
        if len(ids) >= sampling.max_tokens:
            ids, finish = ids[: sampling.max_tokens], "length"
        elif reply.eos:
            ids.append(self.chat.eos_token_id)
        logprobs = [-self.rng.random() * 5 for _ in ids]
        self.calls.append((list(prompt_token_ids), list(ids), logprobs))
        return Generation(token_ids=ids, logprobs=logprobs, finish_reason=finish, model=self.model_name,
                          policy_version=self.policy_version + len(self.calls) - 1)

    async def chat(self, messages, tools, sampling) -> dict:
        raise NotImplementedError("agents use generate")

    def tokenizer_path(self) -> str:
        return self.chat.hf.name_or_path


@dataclass
class FakeEnv:
    """Tools answer `tool_output(call)`; verify rewards 1.0 when the last assistant message contains `answer`."""

    tool_specs: list[ToolSpec] = field(default_factory=lambda: [
        ToolSpec(name="get_weather", description="Weather for a city",
                 parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    ])
    tool_output: Callable[[ToolCall], str] = lambda call: f"{call.arguments.get('city', '?')}: sunny, 21 C"
    answer: str = "sunny"
    fail_on: set[str] = field(default_factory=set)  # method names that raise
    exc: type[BaseException] = RuntimeError
    verify_error: str | None = None
    # step env: list of (observation, reward, done) answered by step()
    steps: list[tuple[str, float, bool]] = field(default_factory=list)
    first_observation: str = "Your hand: 15. Dealer shows 10. Reply hit or stick."
    log: list[tuple] = field(default_factory=list)

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail_on:
            raise self.exc(f"{name} failed on purpose")

    async def tools(self) -> list[ToolSpec]:
        self.log.append(("tools",))
        self._maybe_fail("tools")
        return self.tool_specs

    async def seed_session(self, session_id: str, task: Task) -> None:
        self.log.append(("seed_session", session_id))
        self._maybe_fail("seed_session")

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        self.log.append(("call_tool", session_id, call.name, call.arguments))
        self._maybe_fail("call_tool")
        return self.tool_output(call)

    async def reset(self, session_id: str, task: Task) -> str:
        self.log.append(("reset", session_id))
        self._maybe_fail("reset")
        return self.first_observation

    async def step(self, session_id: str, action: str) -> StepResult:
        n = sum(1 for e in self.log if e[0] == "step")
        self.log.append(("step", session_id, action))
        self._maybe_fail("step")
        obs, reward, done = self.steps[min(n, len(self.steps) - 1)]
        return StepResult(observation=obs, reward=reward, done=done)

    async def verify(self, session_id: str, task: Task, messages: list[Message]) -> VerifyResult:
        self.log.append(("verify", session_id, [m.role for m in messages]))
        self._maybe_fail("verify")
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        ok = last is not None and self.answer in last.content and not last.tool_calls
        return VerifyResult(reward=1.0 if ok else 0.0, components={"correct": 1.0 if ok else 0.0},
                            error=self.verify_error)

    async def close_session(self, session_id: str) -> None:
        self.log.append(("close_session", session_id))
