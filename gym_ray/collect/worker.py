"""The agent actor: runs many episodes at once and streams back Arrow tables of finished, complete groups.

One actor builds its policy client, env clients, agents and tokenizer once. Work arrives in chunks of
groups; results leave in batches (a short linger collects groups that finish close together), so the
driver sees a handful of messages per second instead of one per rollout.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import AsyncIterator

import pyarrow as pa
import ray

from gym_ray.agents.base import EpisodeContext, infra_failure
from gym_ray.collect.plan import GroupSpec
from gym_ray.collect.telemetry import CollectTelemetry
from gym_ray.collect.wiring import (
    WorkerSetup,
    build_agent,
    build_env,
    build_policy,
    infra_error_types,
    load_tokenizer,
)
from gym_ray.redact import install_log_redaction
from gym_ray.types import (
    Delivery,
    Failure,
    FailureKind,
    FailureStage,
    Message,
    Rollout,
    RolloutInvariantError,
    Status,
    ToolCall,
    rollouts_to_arrow,
)


def failed_row(g: GroupSpec, index: int, status: Status, error: str, failure: Failure, attempt: int = 0,
               **provenance) -> Rollout:
    """The row of an episode that produced no usable tokens: accounted for, masked out of training."""
    return Rollout.failed(
        status=status, error=error, failure=failure, rollout_id=g.rollout_id(index), group_id=g.group_id,
        task_id=g.task.task_id, env=g.task.env, rollout_index=index, group_size=g.group_size,
        attempt=attempt, task_json=g.task.model_dump_json(),
        prompt_messages_json=json.dumps([m.to_openai() for m in g.task.prompt]), **provenance,
    )


class EnvCallError(RuntimeError):
    """An environment call failed (not a tool error, which comes back as text): status `env_error`."""


class PolicyCallError(RuntimeError):
    """The policy refused or failed a call (e.g. prompt too long): status `model_error`."""


class _GuardedEnv:
    """Delegates to an EnvClient, tagging non-infrastructure failures as `EnvCallError`."""

    def __init__(self, inner, infra: tuple[type[BaseException], ...]):
        self._inner = inner
        self._passthrough = (*infra, asyncio.CancelledError, EnvCallError, PolicyCallError)

    async def _call(self, name: str, *args):
        try:
            return await getattr(self._inner, name)(*args)
        except self._passthrough:
            raise
        except Exception as e:
            raise EnvCallError(f"{name}: {type(e).__name__}: {e}") from e

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


class _GuardedPolicy:
    """Delegates to a PolicyClient, tagging non-infrastructure failures as `PolicyCallError`."""

    def __init__(self, inner, infra: tuple[type[BaseException], ...]):
        self._inner = inner
        self._passthrough = (*infra, asyncio.CancelledError)
        self.model_name = inner.model_name

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        try:
            return await self._inner.generate(prompt_token_ids, sampling, session_id)
        except self._passthrough:
            raise
        except Exception as e:
            raise PolicyCallError(f"generate: {type(e).__name__}: {e}") from e

    async def chat(self, messages, tools, sampling):
        try:
            return await self._inner.chat(messages, tools, sampling)
        except self._passthrough:
            raise
        except Exception as e:
            raise PolicyCallError(f"chat: {type(e).__name__}: {e}") from e

    def tokenizer_path(self) -> str:
        return self._inner.tokenizer_path()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class AgentWorker:
    """Body of the agent actor (see `AgentActor`)."""

    def __init__(self, setup: WorkerSetup, name: str = "agent-0"):
        self.setup = setup
        self.name = name
        self.infra = infra_error_types()
        install_log_redaction()
        raw_policy = build_policy(setup)
        self.policy = _GuardedPolicy(raw_policy, self.infra)
        self.tokenizer = load_tokenizer(raw_policy, setup.chat_template)
        self.fingerprint = self.tokenizer.fingerprint
        clients = {n: build_env(n, spec) for n, spec in setup.envs.items()}
        for client in clients.values():
            if hasattr(client, "build"):  # in-process envs: a bad server or constructor fails the actor now
                client.build()
        self.envs = {n: _GuardedEnv(c, self.infra) for n, c in clients.items()}
        self.agents = {n: build_agent(n, spec, setup.agent_classes.get(n)) for n, spec in setup.envs.items()}
        self.sem = asyncio.Semaphore(setup.concurrency)
        self.in_flight = 0
        self.sampling_json = setup.sampling.model_dump_json()
        self.telemetry = CollectTelemetry(name)
        self._background: set[asyncio.Task] = set()

    async def ready(self) -> dict:
        return {"actor": self.name, "envs": sorted(self.envs), "model": self.policy.model_name}

    async def run_chunk(self, groups: list[GroupSpec]) -> AsyncIterator[pa.Table]:
        """Run every episode of `groups`; yield Arrow tables, each holding whole groups only."""
        done: asyncio.Queue[list[Rollout]] = asyncio.Queue()

        async def one_group(g: GroupSpec) -> None:
            outcomes = await asyncio.gather(*(self.episode(g, i) for i in range(g.group_size)))
            done.put_nowait([row for rows in outcomes for row in rows])

        tasks = [asyncio.create_task(one_group(g)) for g in groups]
        remaining = len(tasks)
        try:
            while remaining:
                batch = [await done.get()]
                remaining -= 1
                deadline = time.monotonic() + self.setup.flush_interval_s
                while remaining and len(batch) < self.setup.flush_groups:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(done.get(), timeout))
                    except TimeoutError:
                        break
                    remaining -= 1
                rows = [r for group in batch for r in group]
                self._record(rows)
                yield rollouts_to_arrow(rows)
        finally:
            for t in tasks:
                t.cancel()

    def _record(self, rows: list[Rollout]) -> None:
        self.telemetry.in_flight(self.in_flight)
        self.telemetry.record([
            (r.env, r.status.value, r.reward, sum(r.response_loss_mask))
            for r in rows if r.segment_index == r.num_segments - 1
        ])

    async def episode(self, g: GroupSpec, index: int) -> list[Rollout]:
        """Exactly one outcome for (task, index): the agent's rows, or one failed row with a status."""
        task = g.task
        identity = dict(
            rollout_id=g.rollout_id(index), group_id=g.group_id, task_id=task.task_id, env=task.env,
            rollout_index=index, group_size=g.group_size,
        )
        agent, env = self.agents.get(task.env), self.envs.get(task.env)
        if agent is None or env is None:
            return [self._failed(g, identity, Status.ENV_ERROR,
                                 f"unknown env {task.env!r}; configured: {sorted(self.envs)}",
                                 Failure(stage=FailureStage.ADMISSION, kind=FailureKind.UNKNOWN_ENV,
                                         delivery=Delivery.NOT_SENT), g.attempt)]
        async with self.sem:
            self.in_flight += 1
            try:
                return await self._attempts(g, identity, agent, env)
            finally:
                self.in_flight -= 1

    async def _attempts(self, g: GroupSpec, identity: dict, agent, env) -> list[Rollout]:
        """Run the episode; re-run it with a fresh session on infrastructure failures (`max_retries`).
        `attempt` counts every try of this rollout, including those of actors that died (`g.attempt`)."""
        retries = 0
        while True:
            attempt = g.attempt + retries
            session_id = f"{identity['rollout_id']}.a{attempt}"
            ctx = EpisodeContext(
                policy=self.policy, env=env, tokenizer=self.tokenizer, sampling=self.setup.sampling,
                config=self.setup.envs[g.task.env].config.agent, rollout_id=identity["rollout_id"],
                group_id=g.group_id, rollout_index=identity["rollout_index"], group_size=g.group_size,
                session_id=session_id, attempt=attempt,
            )
            try:
                rows = await asyncio.wait_for(agent.run(g.task, ctx), self.setup.episode_timeout_s)
                return self._accept(g, identity, rows, attempt)
            except TimeoutError:
                return self._end(g, identity, env, ctx, Status.TIMEOUT,
                                 f"episode exceeded {self.setup.episode_timeout_s:g} s (during {ctx.stage.value})",
                                 ctx.stage, FailureKind.TIMEOUT)
            except self.infra as e:
                self._close_later(env, session_id)
                if retries >= self.setup.max_retries:
                    failure = infra_failure(e, ctx.stage)
                    return [self._failed(g, identity, Status.INFRA_ERROR,
                                         f"{type(e).__name__}: {e} (after {retries + 1} attempts)", failure,
                                         attempt)]
                retries += 1
                self.telemetry.retried(g.task.env)
                await asyncio.sleep(min(0.2 * 2**retries, 5.0))
            except EnvCallError as e:
                return self._end(g, identity, env, ctx, Status.ENV_ERROR, str(e), ctx.stage, FailureKind.EXCEPTION)
            except PolicyCallError as e:
                return self._end(g, identity, env, ctx, Status.MODEL_ERROR, str(e), FailureStage.GENERATE,
                                 FailureKind.EXCEPTION)
            except Exception as e:
                tb = traceback.format_exception(e)[-3:]
                return self._end(g, identity, env, ctx, Status.ABORTED,
                                 f"agent raised {type(e).__name__}: {e}\n" + "".join(tb),
                                 FailureStage.AGENT, FailureKind.EXCEPTION)

    def _end(self, g: GroupSpec, identity: dict, env, ctx: EpisodeContext, status: Status, error: str,
             stage: FailureStage, kind: FailureKind) -> list[Rollout]:
        """The one failed row of an episode that raised; its session is freed in the background."""
        self._close_later(env, ctx.session_id)
        return [self._failed(g, identity, status, error, Failure(stage=stage, kind=kind), ctx.attempt)]

    def _accept(self, g: GroupSpec, identity: dict, rows: list[Rollout], attempt: int) -> list[Rollout]:
        """Check the agent's rows carry this episode's identity and the token contract; fill provenance."""
        try:
            if not rows:
                raise RolloutInvariantError("agent returned no rows")
            for i, r in enumerate(rows):
                for k, v in identity.items():
                    if getattr(r, k) != v:
                        raise RolloutInvariantError(f"row {i}: {k} is {getattr(r, k)!r}, expected {v!r}")
                if r.segment_index != i or r.num_segments != len(rows):
                    raise RolloutInvariantError(
                        f"row {i}: segment {r.segment_index}/{r.num_segments} in a list of {len(rows)}")
                r.attempt = attempt
                if not r.gen_policy_versions and r.gen_span_starts:  # an agent that predates the column
                    r.gen_policy_versions = [r.policy_version] * len(r.gen_span_starts)
                r.check_invariants()
                if not r.tokenizer_fingerprint:
                    r.tokenizer_fingerprint = self.fingerprint
                if r.task_json == "{}":
                    r.task_json = g.task.model_dump_json()
                if r.sampling_params_json == "{}":
                    r.sampling_params_json = self.sampling_json
                if not r.model:
                    r.model = self.policy.model_name
        except RolloutInvariantError as e:
            return [self._failed(g, identity, Status.ABORTED, f"agent produced an invalid row: {e}",
                                 Failure(stage=FailureStage.AGENT, kind=FailureKind.BAD_OUTPUT), attempt)]
        return rows

    def _failed(self, g: GroupSpec, identity: dict, status: Status, error: str, failure: Failure,
                attempt: int) -> Rollout:
        return failed_row(g, identity["rollout_index"], status, error, failure, attempt,
                          model=self.policy.model_name, tokenizer_fingerprint=self.fingerprint,
                          sampling_params_json=self.sampling_json)

    def _close_later(self, env, session_id: str) -> None:
        """Free the environment's session without delaying the failed row."""

        async def close() -> None:
            try:
                await asyncio.wait_for(env.close_session(session_id), 10)
            except Exception:  # the session expires on the server anyway
                pass

        t = asyncio.get_running_loop().create_task(close())
        self._background.add(t)
        t.add_done_callback(self._background.discard)


AgentActor = ray.remote(num_cpus=0, max_restarts=3)(AgentWorker)
