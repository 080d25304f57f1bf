"""Run one episode of a configured environment against a policy, with the failure contract applied: the
agent's rows, or exactly one failed row with a status and a failure record; infrastructure failures re-run
with a fresh session. The agent actor runs its episodes through it, and trainer adapters
(`gym_ray.integrations`) run theirs through it with the trainer's own engine as the policy.
"""

from __future__ import annotations

import asyncio
import json
import traceback

from gym_ray.agents.base import EpisodeContext, infra_error_types, infra_failure
from gym_ray.collect.plan import GroupSpec
from gym_ray.collect.wiring import EnvSpec, build_agent, build_env
from gym_ray.config import SamplingConfig
from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage, Status
from gym_ray.tasks import failed_row_texts
from gym_ray.types import Message, Rollout, RolloutInvariantError, ToolCall


def failed_row(g: GroupSpec, index: int, status: Status, error: str, failure: Failure, attempt: int = 0,
               **provenance) -> Rollout:
    """The row of an episode that produced no usable tokens: accounted for, masked out of training (with a
    bounded copy of its task)."""
    task_json, prompt_json, record = failed_row_texts(g.task)
    return Rollout.failed(
        status=status, error=error, failure=failure, rollout_id=g.rollout_id(index), group_id=g.group_id,
        task_id=g.task.task_id, env=g.task.env, rollout_index=index, group_size=g.group_size,
        attempt=attempt, task_json=task_json, prompt_messages_json=prompt_json,
        metrics_json=json.dumps(record) if record else "{}", **provenance,
    )


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


class _GuardedEnv(_Guarded):
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


class _GuardedPolicy(_Guarded):
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


class EpisodeRunner:
    """Environments and agents built once; `run(g, index)` plays one episode of group `g`.

    `envs` and `agents` are keyed by env name; `policy` and `sampling` are the defaults, which a trainer
    adapter may replace per call (its engine, its sampling parameters). `telemetry` (optional) counts retries.
    """

    def __init__(self, envs: dict, agents: dict, agent_configs: dict, tokenizer, policy, sampling: SamplingConfig,
                 *, episode_timeout_s: float = 300.0, max_retries: int = 2, concurrency: int = 1 << 30,
                 telemetry=None):
        self.infra = infra_error_types()
        self.envs = {n: _GuardedEnv(c, self.infra) for n, c in envs.items()}
        self.agents = agents
        self.agent_configs = agent_configs
        self.tokenizer = tokenizer
        self.fingerprint = tokenizer.fingerprint
        self.policy = _GuardedPolicy(policy, self.infra)
        self.sampling = sampling
        self.episode_timeout_s = episode_timeout_s
        self.max_retries = max_retries
        self.telemetry = telemetry
        self.sem = asyncio.Semaphore(concurrency)
        self.in_flight = 0
        self._background: set[asyncio.Task] = set()

    @classmethod
    def from_specs(cls, specs: dict[str, EnvSpec], tokenizer, policy, sampling: SamplingConfig, *,
                   agent_classes: dict | None = None, max_total_tokens: int | None = None,
                   **options) -> EpisodeRunner:
        """Build every env's client and agent; in-process envs are constructed now, so a bad server or
        constructor fails here, not in every episode. `max_total_tokens` caps each agent's token budget
        (a trainer's padded sequence width)."""
        clients = {n: build_env(n, s) for n, s in specs.items()}
        for client in clients.values():
            if hasattr(client, "build"):
                client.build()
        agents = {n: build_agent(n, s, (agent_classes or {}).get(n)) for n, s in specs.items()}
        configs = {n: s.config.agent for n, s in specs.items()}
        if max_total_tokens is not None:
            configs = {n: c.model_copy(update={"max_total_tokens": min(c.max_total_tokens, max_total_tokens)})
                       for n, c in configs.items()}
        return cls(clients, agents, configs, tokenizer, policy, sampling, **options)

    async def run(self, g: GroupSpec, index: int, policy=None, sampling: SamplingConfig | None = None) -> list[Rollout]:
        """Exactly one outcome for (task, index): the agent's rows, or one failed row with a status."""
        policy = _GuardedPolicy(policy, self.infra) if policy is not None else self.policy
        sampling = sampling or self.sampling
        task = g.task
        identity = dict(
            rollout_id=g.rollout_id(index), group_id=g.group_id, task_id=task.task_id, env=task.env,
            rollout_index=index, group_size=g.group_size,
        )
        provenance = dict(model=policy.model_name, tokenizer_fingerprint=self.fingerprint,
                          sampling_params_json=sampling.model_dump_json())
        agent, env = self.agents.get(task.env), self.envs.get(task.env)
        if agent is None or env is None:
            failure = Failure(stage=FailureStage.ADMISSION, kind=FailureKind.UNKNOWN_ENV, delivery=Delivery.NOT_SENT)
            return [failed_row(g, index, Status.ENV_ERROR,
                               f"unknown env {task.env!r}; configured: {sorted(self.envs)}", failure, g.attempt,
                               **provenance)]
        async with self.sem:
            self.in_flight += 1
            try:
                return await self._attempts(g, identity, agent, env, policy, sampling, provenance)
            finally:
                self.in_flight -= 1

    async def _attempts(self, g: GroupSpec, identity: dict, agent, env, policy, sampling: SamplingConfig,
                        provenance: dict) -> list[Rollout]:
        """Run the episode; re-run it with a fresh session on infrastructure failures (`max_retries`).
        `attempt` counts every try of this rollout, including those of actors that died (`g.attempt`)."""
        retries = 0
        while True:
            attempt = g.attempt + retries
            session_id = f"{identity['rollout_id']}.a{attempt}"
            ctx = EpisodeContext(
                policy=policy, env=env, tokenizer=self.tokenizer, sampling=sampling,
                config=self.agent_configs[g.task.env], rollout_id=identity["rollout_id"],
                group_id=g.group_id, rollout_index=identity["rollout_index"], group_size=g.group_size,
                session_id=session_id, attempt=attempt,
            )
            try:
                rows = await asyncio.wait_for(agent.run(g.task, ctx), self.episode_timeout_s)
                return self._accept(g, identity, rows, attempt, provenance)
            except TimeoutError:
                return self._end(g, env, ctx, provenance, Status.TIMEOUT,
                                 f"episode exceeded {self.episode_timeout_s:g} s (during {ctx.stage.value})",
                                 ctx.stage, FailureKind.TIMEOUT)
            except self.infra as e:
                self._close_later(env, session_id)
                if retries >= self.max_retries:
                    failure = infra_failure(e, ctx.stage)
                    return [failed_row(g, identity["rollout_index"], Status.INFRA_ERROR,
                                       f"{type(e).__name__}: {e} (after {retries + 1} attempts)", failure,
                                       attempt, **provenance)]
                retries += 1
                if self.telemetry is not None:
                    self.telemetry.retried(g.task.env)
                await asyncio.sleep(min(0.2 * 2**retries, 5.0))
            except EnvCallError as e:
                return self._end(g, env, ctx, provenance, Status.ENV_ERROR, str(e), ctx.stage, FailureKind.EXCEPTION)
            except PolicyCallError as e:
                return self._end(g, env, ctx, provenance, Status.MODEL_ERROR, str(e), FailureStage.GENERATE,
                                 FailureKind.EXCEPTION)
            except Exception as e:
                tb = traceback.format_exception(e)[-3:]
                return self._end(g, env, ctx, provenance, Status.ABORTED,
                                 f"agent raised {type(e).__name__}: {e}\n" + "".join(tb),
                                 FailureStage.AGENT, FailureKind.EXCEPTION)

    def _end(self, g: GroupSpec, env, ctx: EpisodeContext, provenance: dict, status: Status, error: str,
             stage: FailureStage, kind: FailureKind) -> list[Rollout]:
        """The one failed row of an episode that raised; its session is freed in the background."""
        self._close_later(env, ctx.session_id)
        return [failed_row(g, ctx.rollout_index, status, error, Failure(stage=stage, kind=kind), ctx.attempt,
                           **provenance)]

    def _accept(self, g: GroupSpec, identity: dict, rows: list[Rollout], attempt: int,
                provenance: dict) -> list[Rollout]:
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
                    r.sampling_params_json = provenance["sampling_params_json"]
                if not r.model:
                    r.model = provenance["model"]
        except RolloutInvariantError as e:
            return [failed_row(g, identity["rollout_index"], Status.ABORTED, f"agent produced an invalid row: {e}",
                               Failure(stage=FailureStage.AGENT, kind=FailureKind.BAD_OUTPUT), attempt,
                               **provenance)]
        return rows

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


