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

from gym_ray.agents.base import EpisodeContext
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
from gym_ray.types import Message, Rollout, RolloutInvariantError, Status, ToolCall, rollouts_to_arrow


def failed_row(g: GroupSpec, index: int, status: Status, error: str, **provenance) -> Rollout:
    """The row of an episode that produced no usable tokens: accounted for, masked out of training."""
    return Rollout.failed(
        status=status, error=error, rollout_id=g.rollout_id(index), group_id=g.group_id,
        task_id=g.task.task_id, env=g.task.env, rollout_index=index, group_size=g.group_size,
        task_json=g.task.model_dump_json(),
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
        raw_policy = build_policy(setup)
        self.policy = _GuardedPolicy(raw_policy, self.infra)
        self.tokenizer = load_tokenizer(raw_policy, setup.chat_template)
        self.fingerprint = self.tokenizer.fingerprint
        self.envs = {n: _GuardedEnv(build_env(n, spec), self.infra) for n, spec in setup.envs.items()}
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
                                 f"unknown env {task.env!r}; configured: {sorted(self.envs)}")]
        async with self.sem:
            self.in_flight += 1
            try:
                return await self._attempts(g, identity, agent, env)
            finally:
                self.in_flight -= 1

    async def _attempts(self, g: GroupSpec, identity: dict, agent, env) -> list[Rollout]:
        attempt = 0
        while True:
            session_id = f"{identity['rollout_id']}.{attempt}"
            ctx = EpisodeContext(
                policy=self.policy, env=env, tokenizer=self.tokenizer, sampling=self.setup.sampling,
                config=self.setup.envs[g.task.env].config.agent, rollout_id=identity["rollout_id"],
                group_id=g.group_id, rollout_index=identity["rollout_index"], group_size=g.group_size,
                session_id=session_id,
            )
            try:
                rows = await asyncio.wait_for(agent.run(g.task, ctx), self.setup.episode_timeout_s)
                return self._accept(g, identity, rows)
            except TimeoutError:
                self._close_later(env, session_id)
                return [self._failed(g, identity, Status.TIMEOUT,
                                     f"episode exceeded {self.setup.episode_timeout_s:g} s")]
            except self.infra as e:
                self._close_later(env, session_id)
                if attempt >= self.setup.max_retries:
                    return [self._failed(g, identity, Status.INFRA_ERROR,
                                         f"{type(e).__name__}: {e} (after {attempt + 1} attempts)")]
                attempt += 1
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
            except EnvCallError as e:
                self._close_later(env, session_id)
                return [self._failed(g, identity, Status.ENV_ERROR, str(e))]
            except PolicyCallError as e:
                self._close_later(env, session_id)
                return [self._failed(g, identity, Status.MODEL_ERROR, str(e))]
            except Exception as e:
                self._close_later(env, session_id)
                tb = traceback.format_exception(e)[-3:]
                return [self._failed(g, identity, Status.ABORTED, f"agent raised {type(e).__name__}: {e}\n"
                                     + "".join(tb))]

    def _accept(self, g: GroupSpec, identity: dict, rows: list[Rollout]) -> list[Rollout]:
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
            return [self._failed(g, identity, Status.ABORTED, f"agent produced an invalid row: {e}")]
        return rows

    def _failed(self, g: GroupSpec, identity: dict, status: Status, error: str) -> Rollout:
        return failed_row(g, identity["rollout_index"], status, error, model=self.policy.model_name,
                          tokenizer_fingerprint=self.fingerprint, sampling_params_json=self.sampling_json)

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
