"""Bookkeeping every agent shares: budgets, timed policy/env calls, error classification and the rows.

Failures follow one rule: infrastructure errors raise `InfraError` (the collector retries), everything
else ends the episode with a status and whatever tokens it had, so no episode is lost.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from gym_ray import meter
from gym_ray.agents.base import EpisodeContext, InfraError, infra_failure, is_infra_error
from gym_ray.agents.tokenizer import ChatTokenizer
from gym_ray.agents.transcript import Transcript, TranscriptError
from gym_ray.clients import Generation
from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage, Status
from gym_ray.models.updates import CUT as WEIGHT_UPDATE
from gym_ray.resources.isolation import EnvHungError
from gym_ray.resources.runtime import SeedError, cap_output
from gym_ray.tasks import FAILED_ROW_KEEP_CHARS, failed_row_texts, messages_json
from gym_ray.types import Message, Rollout, RolloutCost, Task, VerifyResult

T = TypeVar("T")
_FAILED = object()
# Messages longer than this are tokenized in a worker thread: a huge tool result must not stall the
# event loop that runs every other episode of the actor.
_OFF_LOOP_CHARS = 8192

# vLLM's words when a prompt exceeds max_model_len (VLLMValidationError)
_MODEL_TOO_SHORT = "longer than the maximum model length"


class Episode:
    """One episode in progress: the transcript, the OpenAI-style messages, timings and the outcome."""

    def __init__(self, task: Task, ctx: EpisodeContext):
        self.task = task
        self.ctx = ctx
        self.chat: ChatTokenizer = ctx.chat
        self.messages: list[Message] = list(task.prompt)
        self.transcript: Transcript | None = None
        self.timings: dict[str, float] = {"generate_s": 0.0, "tool_s": 0.0, "env_s": 0.0, "verify_s": 0.0}
        self.tokens_in = self.tokens_out = 0  # prompt tokens sent and tokens received, over the policy calls
        self.env_cost: dict[str, float] = {}  # what the environment spent, as its verify answer says
        self.status = Status.OK
        self.error: str | None = None
        self.failure: Failure | None = None
        self.truncated = False
        self.stop_reason = ""
        self.reward = 0.0
        self.components: dict[str, float] = {}
        self.turn_rewards: list[float] = []
        self.num_tool_calls = 0
        self.tool_records: list[dict[str, Any]] = []  # `gym_ray.resources.records`, one per tool call
        self.info: dict[str, Any] = {}
        self._models: list[str] = []
        self._versions: list[int] = []
        self._t0 = time.perf_counter()
        self.limit, self._limit_name = self._token_limit()
        self._refused_by_size = False

    def fork(self, ctx: EpisodeContext) -> Episode:
        """A copy of this episode in progress that continues on its own under `ctx` (a tree's branch: its
        own env session and rollout identity)."""
        other = copy.copy(self)
        other.ctx = ctx
        other.messages = list(self.messages)
        other.transcript = self.transcript.fork() if self.transcript is not None else None
        other.timings = dict(self.timings)
        other.env_cost = dict(self.env_cost)
        other.components = dict(self.components)
        other.turn_rewards = list(self.turn_rewards)
        other.tool_records = list(self.tool_records)
        other.info = copy.deepcopy(self.info)
        other._models = list(self._models)
        other._versions = list(self._versions)
        return other

    def _token_limit(self) -> tuple[int, str]:
        """The smaller of the agent's token budget and the model's context length, and which one it is."""
        budget = self.ctx.config.max_total_tokens
        context = self.ctx.config.kwargs.get("max_context_len") or getattr(self.ctx.policy, "max_model_len", None)
        if not isinstance(context, int) or context <= 0:
            context = self.chat.model_max_length
        if context is not None and context < budget:
            return context, "context_limit"
        return budget, "token_budget"

    @property
    def stopped(self) -> bool:
        return bool(self.stop_reason)

    def stop(self, reason: str, *, truncated: bool = False) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        self.truncated = self.truncated or truncated

    def fail(self, status: Status, error: str, failure: Failure) -> None:
        if self.status == Status.OK:
            self.status, self.error, self.failure = status, error, failure
        self.stop("error")

    def at(self, stage: FailureStage) -> None:
        """Say what the episode is doing now (a timeout row names the stage; its CPU is charged to it)."""
        self.ctx.stage = stage
        meter.switch(stage)

    def admit(self, messages: list[Message], tools: list[dict] | None = None) -> None:
        """Start the transcript with the prompt's ids, unless the prompt cannot fit. Its size is checked
        first: a prompt of more characters than the token limit times the longest token's cannot fit whatever
        the tokenizer makes of it, and tokenizing it whole (a 50 MB prompt) would cost gigabytes."""
        chars = sum(len(m.content) for m in messages)
        per_token = self.chat.longest_token_chars
        if chars > self.limit * per_token:
            self.start([])
            self._refused_by_size = True
            self.fail(Status.MODEL_ERROR,
                      f"prompt of {chars} characters cannot fit the {self._limit_name.replace('_', ' ')} "
                      f"{self.limit} (no token of this tokenizer covers more than {per_token} characters); "
                      "refused before tokenizing",
                      Failure(stage=FailureStage.ADMISSION, kind=FailureKind.PROMPT_TOO_LONG,
                              delivery=Delivery.NOT_SENT))
            return
        self.start(self.chat.prompt_ids(messages, tools))

    def start(self, prompt_token_ids: list[int]) -> None:
        """Begin the transcript. A prompt that leaves no room to generate is a failed admission, never an
        `ok` row with no response scored 0."""
        self.transcript = Transcript(self.chat, prompt_token_ids)
        if prompt_token_ids and len(prompt_token_ids) >= self.limit:
            self.fail(Status.MODEL_ERROR,
                      f"prompt of {len(prompt_token_ids)} tokens leaves no room to generate "
                      f"({self._limit_name.replace('_', ' ')} {self.limit})",
                      Failure(stage=FailureStage.ADMISSION, kind=FailureKind.PROMPT_TOO_LONG,
                              delivery=Delivery.NOT_SENT))

    async def generate(self) -> Generation | None:
        """One model call on the current context, its max_tokens capped by what the budget has left.
        Returns None (and records why) when the episode must stop instead."""
        tr = self.transcript
        room = self.limit - len(tr)
        if room <= 0:
            self.stop(self._limit_name, truncated=True)
            return None
        sampling = self.ctx.sampling
        max_tokens = min(sampling.max_tokens, room)
        if max_tokens < sampling.max_tokens:
            sampling = sampling.model_copy(update={"max_tokens": max_tokens})
        t = time.perf_counter()
        self.at(FailureStage.GENERATE)
        self.tokens_in += len(tr)
        try:
            gen = await self.ctx.policy.generate(tr.context(), sampling,
                                                 self.ctx.policy_session_id or self.ctx.session_id)
        except Exception as e:
            if is_infra_error(e):
                raise InfraError(f"policy generate: {type(e).__name__}: {e}",
                                 infra_failure(e, FailureStage.GENERATE)) from e
            # the engine's own refusal of a prompt over its context (the agent's budget may be larger)
            kind = FailureKind.PROMPT_TOO_LONG if _MODEL_TOO_SHORT in str(e) else FailureKind.EXCEPTION
            self.fail(Status.MODEL_ERROR, f"policy generate (call {tr.num_calls}): {type(e).__name__}: {e}",
                      Failure(stage=FailureStage.GENERATE, kind=kind))
            return None
        finally:
            self.timings["generate_s"] += time.perf_counter() - t
        parts = gen.extra.get("parts")  # cut by a weight update and continued: one span per version
        try:
            tr.add_generation(gen.token_ids, gen.logprobs, gen.finish_reason, gen.policy_version, parts)
        except TranscriptError as e:
            self.fail(Status.MODEL_ERROR, f"policy generate (call {tr.num_calls}): {e}",
                      Failure(stage=FailureStage.GENERATE, kind=FailureKind.BAD_OUTPUT))
            return None
        self.note(gen)
        self.tokens_out += len(gen.token_ids)
        if gen.finish_reason == WEIGHT_UPDATE:
            self.fail(Status.ABORTED, f"{WEIGHT_UPDATE}: the policy's weights changed while model call "
                      f"{tr.num_calls - 1} generated under version {gen.policy_version}; dropped",
                      Failure(stage=FailureStage.GENERATE, kind=FailureKind.ABORTED))
        elif gen.finish_reason == "abort":
            self.fail(Status.ABORTED, f"policy aborted generation (call {tr.num_calls - 1})",
                      Failure(stage=FailureStage.GENERATE, kind=FailureKind.ABORTED))
        elif gen.finish_reason == "length":
            self.stop(self._limit_name if max_tokens == room else "max_tokens", truncated=True)
        return gen

    def note(self, gen: Generation) -> None:
        """Count a recorded generation's model and policy version into the rows' provenance (agents that
        call the policy themselves, e.g. the gateway, record through this too)."""
        self._models.append(gen.model)
        self._versions.extend(v for _, v, _ in gen.extra.get("parts") or [[0, gen.policy_version, ""]])

    def capped(self, text: str) -> str:
        """A tool result or observation cut to the agent's `max_tool_output_chars`, saying so to the model
        (on Serve the env replica cut it already); the row's metrics count the cuts."""
        text, cut = cap_output(text, self.ctx.config.max_tool_output_chars)
        if cut:
            self.info["tool_outputs_truncated"] = self.info.get("tool_outputs_truncated", 0) + 1
        return text

    async def append(self, new_messages: list[Message]) -> bool:
        """Add messages that follow a model turn: to the chat, and as the template's token delta to the
        transcript. False (episode truncated) when the delta leaves no room for another generated token."""
        self.messages.extend(new_messages)
        if sum(len(m.content) for m in new_messages) > _OFF_LOOP_CHARS:
            delta = await asyncio.to_thread(self.transcript.delta_for, new_messages)
        else:
            delta = self.transcript.delta_for(new_messages)
        if len(self.transcript) + len(delta) >= self.limit:
            self.stop(self._limit_name, truncated=True)
            return False
        self.transcript.add_context(delta)
        return True

    async def env_call(
        self, what: str, aw: Awaitable[T], stage: FailureStage, timing: str = "env_s"
    ) -> T | Any:
        """Await an environment call; on a non-infrastructure failure record `env_error` and return `_FAILED`."""
        t = time.perf_counter()
        self.at(stage)
        try:
            return await aw
        except Exception as e:
            if is_infra_error(e):
                raise InfraError(f"env {what}: {type(e).__name__}: {e}", infra_failure(e, stage)) from e
            kind = FailureKind.HUNG if _raised(e, EnvHungError) else FailureKind.EXCEPTION
            if _raised(e, SeedError):  # a seed sent with the session's first call failed there
                stage = FailureStage.SEED
            self.fail(Status.ENV_ERROR, f"env {what}: {type(e).__name__}: {e}", Failure(stage=stage, kind=kind))
            return _FAILED
        finally:
            self.timings[timing] += time.perf_counter() - t

    async def verify(self) -> None:
        """Score the episode with the environment's verifier; a verifier failure is `env_error`, not 0."""
        stage = FailureStage.VERIFICATION
        result: VerifyResult = await self.env_call(
            "verify", self.ctx.env.verify(self.ctx.session_id, self.task, self.messages), stage, "verify_s"
        )
        if failed(result):
            return
        self.env_cost = result.cost
        if result.info:
            self.info["verify_info"] = result.info
        if result.error:
            self.fail(Status.ENV_ERROR, f"verify: {result.error}",
                      Failure(stage=stage, kind=result.error_kind or FailureKind.EXCEPTION))
            return
        self.reward = result.reward
        self.components = dict(result.components)

    async def close(self) -> None:
        """Free the environment session; a failure here does not change the outcome."""
        self.at(FailureStage.CLEANUP)
        t = time.perf_counter()
        try:
            await self.ctx.env.close_session(self.ctx.session_id)
        except Exception as e:
            self.info["close_error"] = f"{type(e).__name__}: {e}"
        finally:
            self.timings["env_s"] += time.perf_counter() - t

    def cost(self) -> RolloutCost:
        """The episode's cost so far as the episode sees it: wall by stage, tokens, and the environment's CPU
        and sandbox use (the agent's own CPU is added by whoever meters its coroutine)."""
        w, env = self.timings, self.env_cost
        tool_cpu, verify_cpu, env_cpu = env.get("tool_cpu_s", 0.0), env.get("verify_cpu_s", 0.0), env.get("env_cpu_s", 0.0)
        sandbox_cpu = env.get("sandbox_cpu_s", 0.0)
        return RolloutCost(
            wall_s=time.perf_counter() - self._t0, cpu_s=tool_cpu + verify_cpu + env_cpu + sandbox_cpu,
            policy_wall_s=w["generate_s"], tool_wall_s=w["tool_s"], verify_wall_s=w["verify_s"],
            env_wall_s=w["env_s"], tool_cpu_s=tool_cpu, verify_cpu_s=verify_cpu, env_cpu_s=env_cpu,
            sandbox_s=env.get("sandbox_s", 0.0), sandbox_cpu_s=sandbox_cpu, sandbox_runs=int(env.get("sandbox_runs", 0)),
            tokens_in=self.tokens_in, tokens_out=self.tokens_out)

    def rows(self) -> list[Rollout]:
        """One row per segment; the outcome is broadcast, earlier segments carry status `prefix_break`."""
        tr = self.transcript or Transcript(self.chat, [])
        ctx = self.ctx
        n = len(tr.segments)
        metrics = {
            **{k: round(v, 6) for k, v in self.timings.items()},
            "total_s": round(time.perf_counter() - self._t0, 6),
            "num_calls": tr.num_calls,
            "stop_reason": self.stop_reason or "final_answer",
            "generated_tokens": sum(sum(s.response_loss_mask) for s in tr.segments),
            "token_limit": self.limit,
            "policy_version_min": min(self._versions, default=0),
            "policy_version_max": max(self._versions, default=0),
            "prefix_breaks": tr.prefix_breaks,
            **self.info,
        }
        if self._refused_by_size:  # the row keeps a cut copy of the task, its size and digest
            task_json, prompt_json, record = failed_row_texts(self.task)
            chat_json = messages_json(self.messages, FAILED_ROW_KEEP_CHARS)
            metrics.update(record)
        else:
            task_json, prompt_json = self.task.model_dump_json(), messages_json(self.task.prompt)
            chat_json = messages_json(self.messages)
        common = dict(
            rollout_id=ctx.rollout_id, group_id=ctx.group_id, task_id=self.task.task_id, env=self.task.env,
            rollout_index=ctx.rollout_index, group_size=ctx.group_size, num_segments=n, attempt=ctx.attempt,
            model=next((m for m in reversed(self._models) if m), "") or getattr(ctx.policy, "model_name", ""),
            policy_version=min(self._versions, default=0),
            tokenizer_fingerprint=self.chat.fingerprint,
            sampling_params_json=ctx.sampling.model_dump_json(),
            reward=float(self.reward),
            reward_component_names=list(self.components),
            reward_component_values=[float(v) for v in self.components.values()],
            turn_rewards=list(self.turn_rewards),
            num_turns=tr.num_calls, num_tool_calls=self.num_tool_calls, truncated=self.truncated,
            tool_calls_json=json.dumps(self.tool_records, ensure_ascii=False),
            prompt_messages_json=prompt_json, messages_json=chat_json, task_json=task_json,
            metrics_json=json.dumps(metrics, ensure_ascii=False, default=str),
            cost=self.cost(),
        )
        rows = []
        for i, seg in enumerate(tr.segments):
            last = i == n - 1
            status = self.status if last else Status.PREFIX_BREAK
            error = self.error if last else (
                f"model call {tr.prefix_breaks[i]}'s prompt does not extend this segment's sequence "
                "(history rewritten); the episode continues in the next segment"
            )
            row = Rollout(**common, **seg.token_fields(), segment_index=i, status=status, error=error)
            if last:
                row.set_failure(self.failure)
            row.check_invariants()
            rows.append(row)
        return rows


def _raised(e: BaseException, kind: type[BaseException]) -> bool:
    """`e` is a `kind`, or wraps one (the collector's guard re-raises env failures as `EnvCallError`)."""
    return isinstance(e, kind) or isinstance(e.__cause__, kind)


def failed(value: Any) -> bool:
    return value is _FAILED
