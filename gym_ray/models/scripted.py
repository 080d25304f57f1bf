"""The scripted policy: answers instantly from fixed replies or a function, tokenized like vLLM would.

It is how tests run without an engine and how users load-test an environment at thousands of concurrent
episodes, so a call does as little as possible: replies are tokenized once and cached; the turn is read
from the prompt itself (how many assistant headers it holds), so any replica answers any call the same.

Weight updates while generating work as on vLLM (`gym_ray.models.updates`): with `tokens_per_second` set, a
reply is sampled one token at a time at that rate, so an update can cut it; a cut reply continues from the
token it reached. Each token's logprob is -version/1000: it names the weights that sampled it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from gym_ray.clients import Generation
from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.models.openai_format import chat_response, render_tool_call
from gym_ray.models.updates import Call, Part, WeightUpdates, merged
from gym_ray.types import Message, ToolSpec

ASSISTANT_HEADER = "<|im_start|>assistant"


class ScriptError(ValueError):
    """The script (`model.replies` / `model.script`) is unusable; the message names the field."""


def load_script(spec: str) -> Callable[..., Any]:
    """`module:function` -> the function; it is called as `fn(prompt_text, turn)` and returns the reply."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise ScriptError(f"model.script: expected 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ScriptError(f"model.script: cannot load {spec!r}: {e}") from e
    if not callable(fn):
        raise ScriptError(f"model.script: {spec!r} is not callable")
    return fn


def reply_text(reply: Any, where: str) -> str:
    """A reply is a string, or `{"name", "arguments"}` (rendered as a Hermes tool call)."""
    if isinstance(reply, str):
        return reply
    if isinstance(reply, dict) and isinstance(reply.get("name"), str):
        return render_tool_call(reply["name"], reply.get("arguments") or {})
    raise ScriptError(f"{where}: expected a string or {{name, arguments}}, got {reply!r}")


class ScriptedPolicy:
    """Token-in/token-out answers from a script, shaped exactly like vLLM's outputs."""

    def __init__(self, cfg: ModelConfig, tokenizer_path: str):
        from transformers import AutoTokenizer

        if bool(cfg.replies) == bool(cfg.script):
            raise ScriptError("a scripted model needs exactly one of model.replies (a list) or model.script")
        self.model_name = cfg.name
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.eos_id: int = self.tokenizer.eos_token_id
        self.replies = [reply_text(r, f"model.replies[{i}]") for i, r in enumerate(cfg.replies)]
        self.fn = load_script(cfg.script) if cfg.script else None
        self._header = self.tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
        self._shape = lru_cache(maxsize=4096)(self._shape_uncached)
        self.tokens_per_second = cfg.tokens_per_second
        self.updates = WeightUpdates()
        self._sampled = asyncio.Event()  # set (and replaced) at each token sampled at `tokens_per_second`

    def turn(self, prompt_token_ids: list[int]) -> int:
        """Index of the assistant turn being generated: assistant headers in the prompt, minus one."""
        h = self._header
        first, n = h[0], len(h)
        count = sum(
            1 for i, t in enumerate(prompt_token_ids) if t == first and prompt_token_ids[i : i + n] == h
        )
        return max(count - 1, 0)

    async def reply_for(self, prompt_token_ids: list[int]) -> str:
        turn = self.turn(prompt_token_ids)
        if self.fn is None:
            return self.replies[min(turn, len(self.replies) - 1)]
        out = self.fn(self.tokenizer.decode(prompt_token_ids, skip_special_tokens=False), turn)
        if inspect.isawaitable(out):
            out = await out
        return reply_text(out, f"model.script {self.fn.__name__}() return value")

    def _shape_uncached(self, text: str, max_tokens: int, stop: tuple[str, ...]) -> tuple[tuple[int, ...], str, str]:
        """vLLM's shape: ids + eos on "stop", cut at max_tokens on "length"; a stop string ends the text."""
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            hit = next(s for s in stop if text.find(s) == cut)
            ids = self.tokenizer.encode(text[: cut + len(hit)], add_special_tokens=False)
            text = text[:cut]
        else:
            ids = [*self.tokenizer.encode(text, add_special_tokens=False), self.eos_id]
        if len(ids) > max_tokens:
            ids = ids[:max_tokens]
            return tuple(ids), "length", self.tokenizer.decode(ids, skip_special_tokens=True)
        return tuple(ids), "stop", text

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True,
                                                 tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]

    async def chat(self, messages: list[dict], tools: list[dict] | None, sampling: SamplingConfig) -> dict:
        """An OpenAI chat completion with token ids and logprobs, as the HTTP route answers it."""
        prompt = self.chat_prompt(messages, tools)
        gen = await self.generate(prompt, sampling)
        return chat_response(gen, prompt, self.token_strings(gen.token_ids), with_logprobs=True, with_ids=True)

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingConfig) -> Generation:
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids is empty")
        text = await self.reply_for(prompt_token_ids)
        ids, finish, out_text = self._shape(text, sampling.max_tokens, tuple(sampling.stop))
        n_prompt = len(prompt_token_ids)

        async def run(prompt: list[int], max_tokens: int, call: Call) -> Part:
            rest = ids[len(prompt) - n_prompt:]  # the reply from where an earlier cut left it
            if self.tokens_per_second:
                for _ in rest:
                    await asyncio.sleep(1 / self.tokens_per_second)
                    if call.cut:
                        return self._part(rest[:call.tokens], call.version, "abort")
                    call.tokens += 1
                    self._sampled.set()
                    self._sampled = asyncio.Event()
            return self._part(rest, call.version, finish)

        parts = await self.updates.generate(run, prompt_token_ids, sampling.max_tokens)
        gen = Generation(**merged(parts, self.model_name))
        gen.text = out_text if gen.token_ids == list(ids) else self.tokenizer.decode(gen.token_ids,
                                                                                     skip_special_tokens=True)
        return gen

    @staticmethod
    def _part(token_ids, version: int, finish: str) -> Part:
        return Part(list(token_ids), [-version / 1000 if version else 0.0] * len(token_ids), version, finish)

    async def sampling_reached(self, tokens: int) -> Call:
        """Return a generation in flight once it has sampled `tokens` tokens (tests cut it there)."""
        while True:
            for call in self.updates.calls:
                if call.tokens >= tokens and not call.cut:
                    return call
            await self._sampled.wait()


class LocalScriptedClient:
    """PolicyClient running the script inside the caller (`hosting: local`): no hop, ~10 us a call.

    Picklable: the tokenizer is loaded on first use in the process that calls.
    """

    def __init__(self, cfg: ModelConfig, tokenizer_path: str):
        self.cfg = cfg
        self.model_name = cfg.name
        self._tokenizer_path = tokenizer_path
        self._policy: ScriptedPolicy | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_policy": None}

    def _p(self) -> ScriptedPolicy:
        if self._policy is None:
            self._policy = ScriptedPolicy(self.cfg, self._tokenizer_path)
        return self._policy

    def tokenizer_path(self) -> str:
        return self._tokenizer_path

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingConfig, session_id: str | None = None
    ) -> Generation:
        return await self._p().generate(prompt_token_ids, sampling)

    async def chat(self, messages: list[Message], tools: list[ToolSpec] | None, sampling: SamplingConfig) -> dict:
        msgs = [m.to_openai() if isinstance(m, Message) else m for m in messages]
        return await self._p().chat(msgs, [t.to_openai() for t in tools] if tools else None, sampling)

    # -- trainer hooks (this process's copy of the script) ----------------------------------------
    async def begin_weight_update(self, mode: str) -> int:
        return await self._p().updates.begin(mode)

    async def end_weight_update(self, version: int) -> int:
        self._p().updates.end(version)
        return version

    async def policy_version(self) -> int:
        return self._p().updates.version
