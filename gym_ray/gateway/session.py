"""One episode's side of the gateway: OpenAI chat requests in, token-exact transcript rows out.

A black-box agent sends its whole history on every call. Re-rendering that history would re-tokenize the
model's own earlier output (its text round-trips through the agent, its tool calls through OpenAI JSON),
so the gateway never does that when it can avoid it: it remembers every recorded sequence (the last 64)
with the messages it stands for (the request plus the reply it gave). A request that repeats such
messages and appends more (tool results, a user turn) gets that sequence verbatim plus the template's
token delta of the new messages: the same ids the engine already saw and sampled. When it is the latest
sequence, the segment simply grows; when it is an earlier one (a retry with another message, a fork, a
parallel conversation in the same session), `Transcript.set_prompt` starts a new segment whose prompt
still holds the exact earlier ids. Any other request (an edited or truncated history, a changed system
prompt or tool list) is rendered whole and handed to `set_prompt` the same way: the segment continues
only if the new prompt extends it. Nothing is silently patched. The rows are the episode's
`Episode.rows()`, as for gym_ray's own agents.

Concurrency: calls of one session generate concurrently. Building a call's prompt and recording its
result are serialized per session (a lock held for microseconds, not over the generation). Each call's
prompt is built from the recorded state when it arrives and recorded when it finishes; a call that
finishes after a parallel call moved the sequence on no longer extends it and is recorded as a new
segment. Nothing is merged or dropped; parallel branches cost rows, not exactness.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gym_ray.agents.base import InfraError, infra_failure, is_infra_error
from gym_ray.agents.episode import Episode, failed
from gym_ray.agents.parsers import get_parser
from gym_ray.agents.tokenizer import TemplateError
from gym_ray.agents.transcript import TranscriptError
from gym_ray.clients import Generation
from gym_ray.config import SamplingConfig
from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.gateway.params import GatewayError, Request, check_chat
from gym_ray.types import Message, ToolCall

# Requests bigger than this (bytes of body, characters of message text) are parsed and tokenized in a
# worker thread: other episodes of the actor share the event loop.
OFF_LOOP_SIZE = 8192
# The largest request body taken (`agent.kwargs.max_request_bytes`): far above any context window's text
# (a 1M-token history is ~4 MB), far below what parsing would stall the actor's other sessions on.
MAX_REQUEST_BYTES = 8 << 20
_BRANCHES_KEPT = 64  # recorded sequences a later request may extend (most recent)


def _text(content: Any) -> str:
    """OpenAI content (a string, None, or a list of parts) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text"):
                parts.append(str(p.get("text", "")))
            else:
                raise GatewayError(400, f"unsupported content part {p.get('type') if isinstance(p, dict) else p!r}"
                                        " (the gateway renders text only)")
        return "".join(parts)
    raise GatewayError(400, f"message content must be a string or a list of parts, got {type(content).__name__}")


def _args(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        obj = json.loads(raw)
    except (TypeError, ValueError):
        raise GatewayError(400, f"tool call arguments are not JSON: {str(raw)[:200]!r}") from None
    if not isinstance(obj, dict):
        raise GatewayError(400, "tool call arguments must be a JSON object")
    return obj


def to_message(d: Any) -> Message:
    """An OpenAI request message as gym_ray's Message (the form the chat template renders)."""
    if not isinstance(d, dict) or "role" not in d:
        raise GatewayError(400, f"each message must be an object with a role, got {str(d)[:200]}")
    role = d["role"]
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise GatewayError(400, f"unsupported message role {role!r}")
    calls = None
    if role == "assistant" and d.get("tool_calls"):
        calls = []
        for c in d["tool_calls"]:
            fn = c.get("function") or {}
            calls.append(ToolCall(id=c.get("id") or f"call_{uuid.uuid4().hex[:12]}", name=fn.get("name", ""),
                                  arguments=_args(fn.get("arguments"))))
    return Message(role="system" if role == "developer" else role, content=_text(d.get("content")),
                   tool_calls=calls, tool_call_id=d.get("tool_call_id"), name=d.get("name"))


def _key(m: Message) -> tuple:
    """What must match for an echoed message to count as the same turn (whitespace around content and
    the JSON spelling of arguments may differ; ids and extra fields do not matter)."""
    calls = tuple((c.name, json.dumps(c.arguments, sort_keys=True)) for c in m.tool_calls or ())
    return (m.role, m.content.strip(), calls, m.tool_call_id if m.role == "tool" else None)


@dataclass
class _Branch:
    """A recorded sequence: `segment`'s ids up to `length` stand for the messages with these keys."""

    keys: list[tuple]
    tools_key: str
    segment: int
    length: int
    last_generated: int | None


class GatewaySession:
    """The gateway state of one episode: its Episode (transcript, messages, outcome) and call bookkeeping."""

    def __init__(self, session_id: str, episode: Episode, model_name: str):
        self.id = session_id
        self.ep = episode
        self.ctx = episode.ctx
        self.chat = episode.chat
        self.model_name = model_name
        self.parser = get_parser(self.ctx.config.tool_parser)
        self.max_request_bytes = self.ctx.config.kwargs.get("max_request_bytes", MAX_REQUEST_BYTES)
        if isinstance(self.max_request_bytes, bool) or not isinstance(self.max_request_bytes, int) \
                or self.max_request_bytes <= 0:
            raise ValueError(f"agent.kwargs.max_request_bytes must be a positive number of bytes, got "
                             f"{self.max_request_bytes!r}")
        self.lock = asyncio.Lock()
        self.ended: str | None = None  # why the session no longer takes calls
        self.infra_error: InfraError | None = None
        self.calls = 0  # recorded model calls
        self.requests = 0
        self.in_flight = 0
        self.context_refusals = 0
        self.last_refused = False  # the latest request was refused for its length (none recorded since)
        self.tool_calls_served = 0
        self._branches: list[_Branch] = []  # recorded sequences and the messages they stand for
        self._env_tool_specs: list | None = None

    # -- the chat call ---------------------------------------------------------------------------
    def check_open(self) -> None:
        if self.ended is not None:
            raise GatewayError(410, f"session {self.id} has ended ({self.ended}); no more calls are taken",
                               "session_ended", "session_ended")

    async def chat_completion(self, body: dict, request: Request | None = None,
                              size: int = 0) -> tuple[dict, Generation, list[int]]:
        """Answer one chat request; returns the response, the generation and the prompt ids sent.
        `request`: its parameters when already checked (a Responses call); `size`: the body's bytes."""
        self.check_open()
        self.requests += 1
        req = request or check_chat(body, self.ctx.sampling, self.ep.limit)
        msgs, tools = await asyncio.to_thread(self._parse, body) if size > OFF_LOOP_SIZE else self._parse(body)
        chars = sum(len(m.content) for m in msgs)
        if chars > self.ep.limit * self.chat.longest_token_chars:  # as vLLM: too long whatever it tokenizes to
            raise self._too_long(f"this request's messages hold {chars} characters, more than any "
                                 f"{self.ep.limit} tokens of this tokenizer spell")
        prompt = await self._prompt(msgs, tools)
        room = self.ep.limit - len(prompt)
        if room <= 0:
            raise self._too_long(f"this request's prompt is {len(prompt)} tokens")
        sampling = req.sampling
        if sampling.max_tokens > room:
            if req.max_tokens_param:
                req.ignored[req.max_tokens_param] = f"cut to the {room} tokens left in the context window"
            sampling = sampling.model_copy(update={"max_tokens": room})
        gen = await self._generate(prompt, sampling)
        response = await self._record(body, msgs, tools, prompt, gen)
        if req.ignored:  # reported, never silently dropped
            response["ignored_params"] = req.ignored
            counts = self.ep.info.setdefault("ignored_params", {})
            for name in req.ignored:
                counts[name] = counts.get(name, 0) + 1
        return response, gen, prompt

    def _too_long(self, what: str) -> GatewayError:
        """The refusal of a prompt that does not fit the episode (the program may stop on it: a token budget)."""
        self.context_refusals += 1
        self.last_refused = True
        return GatewayError(400, f"{what}; the episode's limit is {self.ep.limit}", "invalid_request_error",
                            "context_length_exceeded", "messages")

    @staticmethod
    def _parse(body: dict) -> tuple[list[Message], list[dict] | None]:
        """The request's messages and tools (its other parameters are `check_chat`'s)."""
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise GatewayError(400, "messages: a non-empty list is required", param="messages")
        tools = body.get("tools") or None
        if tools is not None and not isinstance(tools, list):
            raise GatewayError(400, "tools must be a list", param="tools")
        if body.get("tool_choice") not in (None, "auto", "none"):
            raise GatewayError(400, "tool_choice: only 'auto' and 'none' are supported (the policy is not "
                                    "constrained; forcing a call would change what it samples)", param="tool_choice")
        return [to_message(m) for m in body["messages"]], tools

    async def _prompt(self, msgs: list[Message], tools: list[dict] | None) -> list[int]:
        """The exact ids for this call: a recorded sequence + the delta of the appended messages when the
        request extends what that sequence stands for (the longest such branch), else the whole history
        rendered."""
        tools_key = json.dumps(tools, sort_keys=True) if tools else ""
        keys = [_key(m) for m in msgs]
        big = sum(len(m.content) for m in msgs) > OFF_LOOP_SIZE
        async with self.lock:
            best: _Branch | None = None
            # The longest match wins; among equal ones the latest (two replies with the same text, e.g. a
            # retry that sampled it again, stand for the same messages: the agent continues the newer).
            for b in sorted(reversed(self._branches), key=lambda b: -len(b.keys)):
                n = len(b.keys)
                if b.tools_key == tools_key and len(keys) > n and keys[:n] == b.keys:
                    best = b
                    break
            if best is not None:
                seg = self.ep.transcript.segments[best.segment]
                base = (seg.prompt_token_ids + seg.response_token_ids)[: best.length]
                new = msgs[len(best.keys):]
                try:
                    if big:
                        delta = await asyncio.to_thread(self.chat.delta_ids, new, best.last_generated)
                    else:
                        delta = self.chat.delta_ids(new, best.last_generated)
                    return base + delta
                except TemplateError:
                    pass  # a template that is not append-only: render the whole history below
        try:
            if big:
                return await asyncio.to_thread(self.chat.prompt_ids, msgs, tools, cache=False)
            return self.chat.prompt_ids(msgs, tools, cache=False)
        except TemplateError as e:
            raise GatewayError(400, f"cannot render the messages with the policy's chat template: {e}") from e

    async def _generate(self, prompt: list[int], sampling: SamplingConfig) -> Generation:
        ep = self.ep
        t = time.perf_counter()
        ep.at(FailureStage.GENERATE)
        self.in_flight += 1
        try:
            return await self.ctx.policy.generate(prompt, sampling, self.ctx.session_id)
        except Exception as e:
            if is_infra_error(e):
                self.infra_error = InfraError(f"policy generate: {type(e).__name__}: {e}",
                                              infra_failure(e, FailureStage.GENERATE))
                self.ended = "the policy is unavailable; the episode will be retried"
                raise GatewayError(503, self.ended, "service_unavailable") from e
            ep.fail(Status.MODEL_ERROR, f"policy generate (request {self.requests}): {type(e).__name__}: {e}",
                    Failure(stage=FailureStage.GENERATE, kind=FailureKind.EXCEPTION))
            self.ended = f"the policy failed: {type(e).__name__}"
            raise GatewayError(502, f"policy generate failed: {type(e).__name__}: {e}", "upstream_error") from e
        finally:
            self.in_flight -= 1
            ep.timings["generate_s"] += time.perf_counter() - t
            ep.at(FailureStage.AGENT)

    async def _record(self, body: dict, msgs: list[Message], tools: list[dict] | None, prompt: list[int],
                      gen: Generation) -> dict:
        """Append the call to the transcript (a new segment when its prompt does not extend the sequence)
        and build the OpenAI answer from the generated text, parsed with the agent's tool parser."""
        ep = self.ep
        async with self.lock:
            if self.ended is not None:  # the program ended (or timed out) while this call generated
                raise GatewayError(410, f"session {self.id} ended during the call ({self.ended})",
                                   "session_ended", "session_ended")
            index = self.calls
            if ep.transcript is None:
                ep.start(prompt)
            else:
                ep.transcript.set_prompt(prompt)
            try:
                ep.transcript.add_generation(gen.token_ids, gen.logprobs, gen.finish_reason, gen.policy_version)
            except TranscriptError as e:
                ep.fail(Status.MODEL_ERROR, f"policy generate (call {index}): {e}",
                        Failure(stage=FailureStage.GENERATE, kind=FailureKind.BAD_OUTPUT))
                self.ended = "the policy returned an output that cannot be stored token-exactly"
                raise GatewayError(502, str(e), "upstream_error") from e
            ep.note(gen)
            self.calls += 1
            self.last_refused = False
            text = self.chat.decode(gen.token_ids)
            parsed = self.parser(text, index)
            if parsed.errors:  # show the agent what the model wrote, as an OpenAI server without a parser would
                ep.info["tool_call_parse_errors"] = ep.info.get("tool_call_parse_errors", 0) + len(parsed.errors)
            content = text.strip() if parsed.errors else parsed.content
            reply = Message(role="assistant", content=content, tool_calls=parsed.calls or None)
            ep.num_tool_calls += len(parsed.calls)
            ep.messages = [*msgs, reply]
            tr = ep.transcript
            self._branches.append(_Branch(
                keys=[_key(m) for m in ep.messages], tools_key=json.dumps(tools, sort_keys=True) if tools else "",
                segment=len(tr.segments) - 1, length=len(tr),
                last_generated=gen.token_ids[-1] if gen.token_ids else None))
            del self._branches[:-_BRANCHES_KEPT]
            ep.info["last_finish_reason"] = gen.finish_reason
        return self._response(body, gen, prompt, reply)

    def _response(self, body: dict, gen: Generation, prompt: list[int], reply: Message) -> dict:
        calls = [c.to_openai() for c in reply.tool_calls or ()]
        message: dict[str, Any] = {"role": "assistant", "content": (reply.content or None) if calls else reply.content}
        if calls:
            message["tool_calls"] = calls
        finish = gen.finish_reason if gen.finish_reason != "abort" else "stop"
        choice: dict[str, Any] = {
            "index": 0, "message": message, "logprobs": None,
            "finish_reason": "tool_calls" if calls and finish == "stop" else finish,
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [
                {"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []}
                for tok, lp in zip(self._token_strings(gen.token_ids), gen.logprobs, strict=True)
            ]}
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.model_name, "choices": [choice],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(gen.token_ids),
                      "total_tokens": len(prompt) + len(gen.token_ids)},
            "policy_version": gen.policy_version,
        }
        if body.get("return_token_ids"):
            out["prompt_token_ids"] = prompt
            choice["token_ids"] = gen.token_ids
        return out

    def _token_strings(self, ids: list[int]) -> list[str]:
        return [self.chat.hf.decode([i]) for i in ids]

    # -- tools -----------------------------------------------------------------------------------
    async def tools(self) -> list[dict]:
        """The environment's tools as OpenAI schemas (for programs that take their tools from us)."""
        return [t.to_openai() for t in await self._env_tools()]

    async def _env_tools(self) -> list:
        self.check_open()
        if self._env_tool_specs is None:
            tools = await self.ep.env_call("tools", self.ctx.env.tools(), FailureStage.TOOL, "tool_s")
            if failed(tools):
                self.ended = "an environment call failed"
                raise GatewayError(502, self.ep.error or "env tools failed", "upstream_error")
            self._env_tool_specs = list(tools)
        return self._env_tool_specs

    async def call_tool(self, name: str, arguments: dict) -> str:
        """Run one of the environment's tools in this episode's env session (an env failure ends the
        episode as `env_error`, as in gym_ray's own agent)."""
        names = {t.name for t in await self._env_tools()}
        if name not in names:
            raise GatewayError(404, f"unknown tool {name!r}; available tools: {sorted(names)}", "not_found_error")
        out = await self.ep.env_call(f"tool {name}", self.ctx.env.call_tool(self.ctx.session_id,
                                                                            ToolCall(name=name, arguments=arguments)),
                                     FailureStage.TOOL, "tool_s")
        if failed(out):
            self.ended = "an environment call failed"
            raise GatewayError(502, self.ep.error or f"tool {name} failed", "upstream_error")
        self.tool_calls_served += 1
        return self.ep.capped(str(out))

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
