"""Small doubles for collection tests: a policy, an environment and an agent that follow the protocols.

The agent's behaviour is read from the task's `verifier_metadata` so one run can mix outcomes:
`sleep_s` (slow episode), `env_fail` (environment raises), `infra_fail_attempts` (the first N attempts
hit an infrastructure failure), `crash` (agent bug), `reward`.
"""

from __future__ import annotations

import asyncio

import ray

from gym_ray.clients import Generation
from gym_ray.types import Rollout, StepResult, VerifyResult


class FakePolicy:
    model_name = "fake-policy"

    def __init__(self, tokenizer_path: str):
        self._tok = tokenizer_path

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        return Generation(token_ids=[11, 12, 2], logprobs=[-0.1, -0.2, -0.3], finish_reason="stop",
                          model=self.model_name)

    async def chat(self, messages, tools, sampling):
        return {}

    def tokenizer_path(self) -> str:
        return self._tok


class FakeEnv:
    def __init__(self):
        self.closed: list[str] = []

    async def tools(self):
        return []

    async def seed_session(self, session_id, task):
        if task.verifier_metadata.get("env_fail"):
            raise RuntimeError("seed failed: database down")

    async def call_tool(self, session_id, call):
        return "ok"

    async def reset(self, session_id, task):
        return "obs"

    async def step(self, session_id, action):
        return StepResult()

    async def verify(self, session_id, task, messages):
        return VerifyResult(reward=float(task.verifier_metadata.get("reward", 1.0)))

    async def close_session(self, session_id):
        self.closed.append(session_id)


class FakeAgent:
    def __init__(self, config):
        self.config = config

    async def run(self, task, ctx):
        meta = task.verifier_metadata
        attempt = ctx.attempt
        if attempt < meta.get("infra_fail_attempts", 0):
            raise ray.exceptions.ActorUnavailableError("replica restarting", None)
        if meta.get("crash"):
            raise KeyError("agent bug")
        await ctx.env.seed_session(ctx.session_id, task)
        if meta.get("sleep_s"):
            await asyncio.sleep(meta["sleep_s"])
        prompt = ctx.tokenizer.encode(task.prompt[-1].content)
        gen = await ctx.policy.generate(list(prompt), ctx.sampling, ctx.session_id)
        result = await ctx.env.verify(ctx.session_id, task, [])
        await ctx.env.close_session(ctx.session_id)
        n = len(gen.token_ids)
        return [Rollout(
            rollout_id=ctx.rollout_id, group_id=ctx.group_id, task_id=task.task_id, env=task.env,
            rollout_index=ctx.rollout_index, group_size=ctx.group_size, model=gen.model,
            prompt_token_ids=list(prompt), response_token_ids=gen.token_ids, response_loss_mask=[1] * n,
            response_logprobs=gen.logprobs, gen_span_starts=[0], gen_span_ends=[n],
            call_finish_reasons=[gen.finish_reason], reward=result.reward, num_turns=1,
        )]


@ray.remote(num_cpus=0)
class CallRecorder:
    """Collects what every policy call was given and returned, keyed by session id."""

    def __init__(self):
        self.calls: dict[str, list[tuple[list[int], list[int]]]] = {}

    def add(self, session_id: str, prompt: list[int], generated: list[int]) -> None:
        self.calls.setdefault(session_id, []).append((prompt, generated))

    def dump(self) -> dict:
        return self.calls


class RecordingPolicy:
    """Wraps the vLLM PolicyClient; records the prompt ids the engine ran on and the ids it generated."""

    def __init__(self, inner, recorder):
        self.inner, self.recorder = inner, recorder
        self.model_name = inner.model_name

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        gen = await self.inner.generate(prompt_token_ids, sampling, session_id)
        await self.recorder.add.remote(session_id, gen.extra["prompt_token_ids"], list(gen.token_ids))
        return gen

    async def chat(self, messages, tools, sampling):
        return await self.inner.chat(messages, tools, sampling)

    def tokenizer_path(self) -> str:
        return self.inner.tokenizer_path()
