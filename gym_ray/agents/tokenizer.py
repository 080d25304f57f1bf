"""One tokenizer + chat template per run, with the two operations the token-exact transcript needs.

`prompt_ids` renders the opening chat once (tools included) and caches it: every rollout of a group, and
every group of the same task shape, reuses the ids. `delta_ids` turns messages appended after a model
turn (tool results, environment observations) into the template's token *delta*: the tokens the template
puts after the assistant's generated text, minus the end-of-turn token the engine already produced.
It renders a tiny fixed conversation, never the whole history, so its cost does not grow with turns.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

from gym_ray.types import Message

TEMPLATES_DIR = Path(__file__).parent / "templates"
SHIPPED_TEMPLATES = {p.stem: p for p in TEMPLATES_DIR.glob("*.jinja")}
_SENTINEL = "GYMRAY_ASSISTANT_TURN_SENTINEL"
# Longer texts are tokenized without holding the GIL, so tokenizing one in a worker thread does not stall
# the event loop (a 4 MiB prompt held it ~7 s on a 2-core VM).
_GIL_FREE_CHARS = 8192
_DELTA_BASE = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U"},
    {"role": "assistant", "content": _SENTINEL},
]


class TemplateError(ValueError):
    """The chat template cannot be used for token-exact transcripts (named option and reason)."""


def resolve_chat_template(spec: str | None, model_template: str | None) -> str:
    """`None`: the model's own; `"auto"`: the model's if it renders tools, else the shipped `chatml_tools`;
    a shipped name (`chatml_tools`); a path to a `.jinja` file; or a literal Jinja template."""
    if spec is None:
        if not model_template:
            raise TemplateError("chat_template: the tokenizer has no chat template; pass one (e.g. 'chatml_tools')")
        return model_template
    if spec == "auto":
        if model_template and "tools" in model_template:
            return model_template
        return SHIPPED_TEMPLATES["chatml_tools"].read_text()
    if spec in SHIPPED_TEMPLATES:
        return SHIPPED_TEMPLATES[spec].read_text()
    if "{{" in spec or "{%" in spec:
        return spec
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text()
    raise TemplateError(
        f"chat_template {spec!r}: not a shipped template ({sorted(SHIPPED_TEMPLATES)}), "
        "not an existing file and not a Jinja template"
    )


def template_message(m: Message) -> dict[str, Any]:
    """A message as chat templates expect it: tool-call arguments as a dict, not a JSON string."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


class ChatTokenizer:
    """A Hugging Face tokenizer bound to one chat template, with a fingerprint and cached renderings."""

    def __init__(self, hf: Any, chat_template: str | None = None, *, prompt_cache_size: int = 4096):
        self.hf = hf
        self.chat_template = resolve_chat_template(chat_template, getattr(hf, "chat_template", None))
        self._compiled = _compile(self.chat_template)
        self._template_vars = dict(getattr(hf, "special_tokens_map", {}) or {})
        backend = getattr(hf, "backend_tokenizer", None)
        self._backend = backend
        self.eos_token_id: int | None = hf.eos_token_id
        self.model_max_length: int | None = _sane_length(getattr(hf, "model_max_length", None))
        self._prompt_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._tools_keys: dict[int, tuple[list[dict], str]] = {}
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        self._longest_token: int | None = None
        self._closing, self._closing_first_id, self._base_text = self._turn_closing()

    def __reduce__(self):
        """Picklable (e.g. sent to a Ray actor): rebuilt from the tokenizer and template, caches start empty."""
        return (ChatTokenizer, (self.hf, self.chat_template))

    @property
    def fingerprint(self) -> str:
        """Hash of the vocabulary (with added tokens) and the chat template: same value, same token space."""
        if self._fingerprint is None:
            if self._backend is not None:
                vocab = self._backend.get_vocab(with_added_tokens=True)
            else:
                vocab = self.hf.get_vocab()
            h = hashlib.sha256("\x00".join(t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])).encode())
            h.update(b"\x01")
            h.update(self.chat_template.encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @property
    def longest_token_chars(self) -> int:
        """Characters of the vocabulary's longest token (added tokens included; byte-level tokens count a
        character per byte): no text becomes fewer tokens than its length divided by this."""
        if self._longest_token is None:
            vocab = self._backend.get_vocab(with_added_tokens=True) if self._backend is not None else self.hf.get_vocab()
            self._longest_token = max(map(len, vocab), default=1)
        return self._longest_token

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            if len(text) > _GIL_FREE_CHARS:  # `encode` holds the GIL throughout, `encode_batch` releases it
                return self._backend.encode_batch([text], add_special_tokens=False)[0].ids
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids as an OpenAI server would return it (special tokens dropped)."""
        return self.hf.decode(ids, skip_special_tokens=True)

    def render(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
        try:
            return self._compiled.render(
                messages=messages, tools=tools or None, add_generation_prompt=add_generation_prompt,
                **self._template_vars,
            )
        except Exception as e:
            roles = [m.get("role") for m in messages]
            raise TemplateError(f"chat template failed to render roles {roles}: {type(e).__name__}: {e}") from e

    def prompt_ids(self, messages: list[Message], tools: list[dict] | None = None, *, cache: bool = True) -> list[int]:
        """Ids of the opening chat plus the generation prompt; a fresh list the caller may extend."""
        rendered = [template_message(m) for m in messages]
        if not cache:
            return self.encode(self.render(rendered, tools))
        key = json.dumps(rendered, ensure_ascii=False) + self._tools_key(tools)
        with self._lock:
            hit = self._prompt_cache.get(key)
            if hit is not None:
                self._prompt_cache.move_to_end(key)
                return list(hit)
        ids = self.encode(self.render(rendered, tools))
        with self._lock:
            self._prompt_cache[key] = ids
            if len(self._prompt_cache) > self._prompt_cache_size:
                self._prompt_cache.popitem(last=False)
        return list(ids)

    def _tools_key(self, tools: list[dict] | None) -> str:
        """Agents pass the same schema list for every episode of an env: serialize it once."""
        if not tools:
            return ""
        hit = self._tools_keys.get(id(tools))
        if hit is None or hit[0] is not tools:
            hit = (tools, "\x00" + json.dumps(tools, sort_keys=True, ensure_ascii=False))
            if len(self._tools_keys) > 256:
                self._tools_keys.clear()
            self._tools_keys[id(tools)] = hit
        return hit[1]

    def delta_ids(self, new_messages: list[Message], last_generated_id: int | None) -> list[int]:
        """Tokens that follow a generated assistant turn when `new_messages` are appended, up to and
        including the next generation prompt.

        The template closes an assistant turn with some text (ChatML: `<|im_end|>\\n`). When the engine
        already produced the first token of it (it stopped on `<|im_end|>`), that token is not repeated;
        the rest (`\\n`) is glue. When it did not (a stop string, an abort), the whole closing is glue.
        """
        full = self.render([*_DELTA_BASE, *(template_message(m) for m in new_messages)], None, True)
        if not full.startswith(self._base_text):
            roles = [m.role for m in new_messages]
            raise TemplateError(
                f"chat template is not append-only: appending roles {roles} after an assistant turn changes "
                "the text rendered before them, so no token delta exists"
            )
        ids = self.encode(self._closing + full[len(self._base_text):])
        if ids and self._closing_first_id is not None and last_generated_id == self._closing_first_id == ids[0]:
            return ids[1:]
        return ids

    def _turn_closing(self) -> tuple[str, int | None, str]:
        """The text the template writes after an assistant message's content (ChatML: `<|im_end|>\\n`)."""
        base = self.render(_DELTA_BASE, None, False)
        at = base.rfind(_SENTINEL)
        if at < 0:
            raise TemplateError("chat template does not render the assistant message content verbatim")
        closing = base[at + len(_SENTINEL):]
        first = self.encode(closing)[:1] if closing else []
        return closing, (first[0] if first else None), base


def _compile(template: str) -> Any:
    """The same sandboxed Jinja environment (filters, extensions) that `apply_chat_template` uses, compiled once."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        return _compile_jinja_template(template)
    except Exception as e:
        raise TemplateError(f"chat_template: does not compile: {type(e).__name__}: {e}") from e


def _sane_length(n: Any) -> int | None:
    """Tokenizers report 1e30 when they do not know their context length."""
    return int(n) if isinstance(n, int) and 0 < n < 10**8 else None


@lru_cache(maxsize=16)
def _load(path: str, chat_template: str | None) -> ChatTokenizer:
    from transformers import AutoTokenizer

    return ChatTokenizer(AutoTokenizer.from_pretrained(path), chat_template)


def load_tokenizer(path: str, chat_template: str | None = None) -> ChatTokenizer:
    """Load (once per process) the tokenizer at `path` bound to `chat_template` (see `resolve_chat_template`)."""
    return _load(str(path), chat_template)


_WRAPPED: dict[int, tuple[Any, ChatTokenizer]] = {}


def as_chat_tokenizer(tokenizer: Any) -> ChatTokenizer:
    """Accept a `ChatTokenizer` or a bare Hugging Face tokenizer (wrapped once, with its own template)."""
    if isinstance(tokenizer, ChatTokenizer):
        return tokenizer
    entry = _WRAPPED.get(id(tokenizer))
    if entry is None or entry[0] is not tokenizer:
        entry = (tokenizer, ChatTokenizer(tokenizer))
        _WRAPPED[id(tokenizer)] = entry
    return entry[1]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    return as_chat_tokenizer(tokenizer).fingerprint
