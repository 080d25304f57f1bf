"""The episode service: one episode of a configured environment against a policy -> its rows.

The failure contract is applied here, once: the agent's rows, or exactly one failed row with a status and a
failure record; infrastructure failures re-run with a fresh session. The collector's agent actors play
every episode through it, and each trainer adapter (`gym_ray.integrations`) plays its own through it with
the trainer's engine as the policy, so an episode means the same thing wherever it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import traceback
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gym_ray.agents.base import (
    ChatTokenizer,
    EpisodeContext,
    infra_error_types,
    infra_failure,
    load_tokenizer,
)
from gym_ray.agents.choose import agent_class
from gym_ray.clients import EnvClient, PolicyClient
from gym_ray.config import EnvConfig, RunConfig, SamplingConfig, TreeConfig, load_config
from gym_ray.episodes.cost import Spent
from gym_ray.episodes.guard import EnvCallError, GuardedEnv, GuardedPolicy, PolicyCallError
from gym_ray.episodes.tree import TreePlayer, branch_refusal, tree_rows
from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage, Status
from gym_ray.tasks import failed_row_texts
from gym_ray.types import Rollout, RolloutInvariantError, Task


@dataclass(frozen=True, slots=True)
class Group:
    """The group an episode belongs to: its id (rollout ids are `<group_id>-<rollout_index>`), how many
    rollouts it holds, and the tries already spent on it elsewhere (agent actors that died, a trainer's own
    retries). The collector's `GroupSpec` carries the same three fields and is passed as is."""

    group_id: str
    group_size: int = 1
    attempt: int = 0


@dataclass
class EnvSpec:
    """How the service reaches one environment: a ready client, or its config (+ Serve app name)."""

    config: EnvConfig
    client: EnvClient | None = None
    app_name: str | None = None


def build_env(name: str, spec: EnvSpec) -> EnvClient:
    """A given client as is; else through the env's Serve app, or in-process when it has none."""
    if spec.client is not None:
        return spec.client
    from gym_ray.resources.client import make_env_client

    return make_env_client(name, spec.config, app_name=spec.app_name)


def failed_row(task: Task, group: Group, index: int, status: Status, error: str, failure: Failure,
               attempt: int = 0, **provenance) -> Rollout:
    """The row of an episode that produced no usable tokens: accounted for, masked out of training (with a
    bounded copy of its task)."""
    task_json, prompt_json, record = failed_row_texts(task)
    return Rollout.failed(
        status=status, error=error, failure=failure, rollout_id=f"{group.group_id}-{index}",
        group_id=group.group_id, task_id=task.task_id, env=task.env, rollout_index=index,
        group_size=group.group_size, attempt=attempt, task_json=task_json, prompt_messages_json=prompt_json,
        metrics_json=json.dumps(record) if record else "{}", **provenance,
    )


class EpisodeService:
    """Environments, agents and the tokenizer built once; `run(task, rollout_index, group)` plays one episode.

    `policy` and `sampling` are the defaults, which a trainer adapter replaces per call (its engine, its
    sampling parameters). `tokenizer` is a `ChatTokenizer` or a tokenizer path (default: the policy's),
    loaded with `chat_template`. `max_total_tokens` caps each agent's token budget (a trainer's padded
    sequence width). `telemetry` (optional) counts retries. `tree`: each rollout of a group is a tree
    (`run_group` plays them; each environment must fork its sessions and use the tool-calling agent).
    """

    _shared: ClassVar[dict[tuple, EpisodeService]] = {}

    def __init__(self, envs: Mapping[str, EnvSpec], policy: PolicyClient, *,
                 tokenizer: ChatTokenizer | str | None = None, chat_template: str | None = None,
                 sampling: SamplingConfig | None = None, agent_classes: Mapping[str, Any] | None = None,
                 max_total_tokens: int | None = None, episode_timeout_s: float = 300.0, max_retries: int = 2,
                 concurrency: int = 1 << 30, telemetry=None, tree: TreeConfig | None = None):
        self.infra = infra_error_types()
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = load_tokenizer(str(tokenizer or policy.tokenizer_path()), chat_template)
        self.tokenizer = tokenizer
        self.fingerprint = tokenizer.fingerprint
        self.policy = GuardedPolicy(policy, self.infra)
        self.sampling = sampling or SamplingConfig()
        self.agent_classes = dict(agent_classes or {})
        self.max_total_tokens = max_total_tokens
        self.episode_timeout_s = episode_timeout_s
        self.max_retries = max_retries
        self.telemetry = telemetry
        self.tree = tree
        self.sem = asyncio.Semaphore(concurrency)
        self.in_flight = 0
        self.envs: dict[str, GuardedEnv] = {}
        self.agents: dict[str, Any] = {}
        self.agent_configs: dict[str, Any] = {}
        self._background: set[asyncio.Task] = set()
        for name, spec in envs.items():
            self.add_env(name, spec)

    @classmethod
    def from_config(cls, config: RunConfig | str | os.PathLike, overrides: Sequence[str] = (), *,
                    policy: PolicyClient, envs: Iterable[str] | None = None, **options) -> EpisodeService:
        """The service of a run config (a `RunConfig`, or a YAML path + `key=value` overrides): its envs
        (or only those named in `envs`), agents, chat template and tokenizer, sampling, episode timeout and
        retries. The policy is the caller's: `model.kind` is not used."""
        cfg = config if isinstance(config, RunConfig) else load_config(config, list(overrides))
        c = cfg.collect
        names = list(cfg.envs if envs is None else envs)
        if unknown := sorted(set(names) - set(cfg.envs)):
            raise ValueError(f"envs: {unknown} not in the run config's envs {sorted(cfg.envs)}")
        options = {"tokenizer": cfg.model.tokenizer, "chat_template": cfg.model.chat_template,
                   "sampling": c.sampling, "episode_timeout_s": c.episode_timeout_s, "max_retries": c.max_retries,
                   "tree": c.tree,
                   **{k: v for k, v in options.items() if v is not None}}
        return cls({n: EnvSpec(config=cfg.envs[n]) for n in names}, policy, **options)

    @classmethod
    def shared(cls, config_path: str | os.PathLike, overrides: Sequence[str] = (), *, policy: PolicyClient,
               **options) -> EpisodeService:
        """`from_config`, built once per process for each (config, overrides, tokenizer, options): for
        trainers that create their agent object per sample. `policy` is only the default of later calls."""
        key = (str(config_path), tuple(overrides), policy.tokenizer_path(), tuple(sorted(options.items())))
        service = cls._shared.get(key)
        if service is None:
            service = cls._shared[key] = cls.from_config(config_path, overrides, policy=policy, **options)
        return service

    def add_env(self, name: str, spec: EnvSpec | EnvConfig) -> None:
        """Build `name`'s client and agent now: in-process envs are constructed here, so a bad server or
        constructor fails at once, not in every episode."""
        spec = spec if isinstance(spec, EnvSpec) else EnvSpec(config=spec)
        if self.tree is not None:
            from gym_ray.resources.runtime import check_forkable

            check_forkable(name, spec.config)  # before building it: such adapters start servers
        client = build_env(name, spec)
        if hasattr(client, "build"):
            client.build()
        agent_config = spec.config.agent
        if self.max_total_tokens is not None:
            agent_config = agent_config.model_copy(
                update={"max_total_tokens": min(agent_config.max_total_tokens, self.max_total_tokens)})
        cls = self.agent_classes.get(name) or agent_class(spec.config)
        agent = cls(spec.config.agent)
        if self.tree is not None:
            self._check_tree(name, client, agent)
        self.agents[name] = agent
        self.agent_configs[name] = agent_config
        self.envs[name] = GuardedEnv(client, self.infra)

    def _check_tree(self, name: str, client: EnvClient, agent) -> None:
        """Refuse, in one line, an environment that cannot be played as trees."""
        if not hasattr(client, "fork_session"):
            raise ValueError(f"envs.{name}: collect.tree needs forkable sessions; its {type(client).__name__} "
                             "client cannot fork")
        refusal = branch_refusal(agent, self.tree.at)
        if refusal:
            raise ValueError(f"envs.{name}: collect.tree {refusal}")

    async def run_group(self, task: Task, group: Group, *, policy: PolicyClient | None = None,
                        sampling: SamplingConfig | None = None) -> list[Rollout]:
        """Every rollout of `group`: `group_size` episodes, or with `tree`, `group_size / leaves` trees."""
        if self.tree is None:
            runs = [self.run(task, i, group, policy=policy, sampling=sampling) for i in range(group.group_size)]
        else:
            leaves = self.tree.leaves
            runs = [self.run_tree(task, i * leaves, group, policy=policy, sampling=sampling)
                    for i in range(max(1, group.group_size // leaves))]
        return [row for rows in await asyncio.gather(*runs) for row in rows]

    async def run_tree(self, task: Task, first_index: int, group: Group, *, policy: PolicyClient | None = None,
                       sampling: SamplingConfig | None = None) -> list[Rollout]:
        """One tree (`tree`): its leaves' rows, rollout indexes from `first_index` by their place in the full
        tree (a node that ended early is a leaf at its first descendant's place); a failed node is a masked
        leaf with a status."""
        assert self.tree is not None, "run_tree needs the service's tree"
        policy = GuardedPolicy(policy, self.infra) if policy is not None else self.policy
        sampling = sampling or self.sampling
        tree_id = f"{group.group_id}-t{first_index // self.tree.leaves}"
        provenance = dict(model=policy.model_name, tokenizer_fingerprint=self.fingerprint,
                          sampling_params_json=sampling.model_dump_json())
        agent, env = self.agents.get(task.env), self.envs.get(task.env)
        if agent is None or env is None:
            failure = Failure(stage=FailureStage.ADMISSION, kind=FailureKind.UNKNOWN_ENV, delivery=Delivery.NOT_SENT)
            return [failed_row(task, group, first_index, Status.ENV_ERROR,
                               f"unknown env {task.env!r}; configured: {sorted(self.envs)}", failure, group.attempt,
                               **provenance)]
        ctx = EpisodeContext(
            policy=policy, env=env, tokenizer=self.tokenizer, sampling=sampling, config=self.agent_configs[task.env],
            rollout_id=f"{group.group_id}-{first_index}", group_id=group.group_id, rollout_index=first_index,
            group_size=group.group_size, session_id=f"{tree_id}.a{group.attempt}", attempt=group.attempt)
        player = TreePlayer(agent, self.tree, tree_id, self.episode_timeout_s, self.infra)
        async with self.sem:
            self.in_flight += 1
            try:
                leaves = await player.run(task, ctx)
            finally:
                self.in_flight -= 1
        rows = []
        for node, leaf in leaves:
            c = node.ep.ctx
            identity = dict(rollout_id=c.rollout_id, group_id=group.group_id, task_id=task.task_id, env=task.env,
                            rollout_index=c.rollout_index, group_size=group.group_size)
            rows += tree_rows(tree_id, node, self._accept(task, group, identity, leaf, group.attempt, provenance))
        return rows

    async def run(self, task: Task, rollout_index: int, group: Group | None = None, *,
                  policy: PolicyClient | None = None, sampling: SamplingConfig | None = None) -> list[Rollout]:
        """Exactly one outcome for (task, rollout_index): the agent's rows, or one failed row with a status.
        Without `group` the episode is a group of its own (a fresh id, size 1)."""
        group = group or Group(uuid.uuid4().hex)
        policy = GuardedPolicy(policy, self.infra) if policy is not None else self.policy
        sampling = sampling or self.sampling
        identity = dict(
            rollout_id=f"{group.group_id}-{rollout_index}", group_id=group.group_id, task_id=task.task_id,
            env=task.env, rollout_index=rollout_index, group_size=group.group_size,
        )
        provenance = dict(model=policy.model_name, tokenizer_fingerprint=self.fingerprint,
                          sampling_params_json=sampling.model_dump_json())
        agent, env = self.agents.get(task.env), self.envs.get(task.env)
        if agent is None or env is None:
            failure = Failure(stage=FailureStage.ADMISSION, kind=FailureKind.UNKNOWN_ENV, delivery=Delivery.NOT_SENT)
            return [failed_row(task, group, rollout_index, Status.ENV_ERROR,
                               f"unknown env {task.env!r}; configured: {sorted(self.envs)}", failure, group.attempt,
                               **provenance)]
        async with self.sem:
            self.in_flight += 1
            try:
                spent = Spent()
                return spent.charge(await self._attempts(task, group, identity, agent, env, policy, sampling,
                                                         provenance, spent))
            finally:
                self.in_flight -= 1

    async def _attempts(self, task: Task, group: Group, identity: dict, agent, env, policy,
                        sampling: SamplingConfig, provenance: dict, spent: Spent) -> list[Rollout]:
        """Run the episode; re-run it with a fresh session on infrastructure failures (`max_retries`).
        `attempt` counts every try of this rollout, including those spent elsewhere (`group.attempt`)."""
        retries = 0
        while True:
            attempt = group.attempt + retries
            session_id = f"{identity['rollout_id']}.a{attempt}"
            ctx = EpisodeContext(
                policy=policy, env=env, tokenizer=self.tokenizer, sampling=sampling,
                config=self.agent_configs[task.env], rollout_id=identity["rollout_id"],
                group_id=group.group_id, rollout_index=identity["rollout_index"], group_size=group.group_size,
                session_id=session_id, attempt=attempt,
            )
            try:
                rows = await asyncio.wait_for(spent.meter(agent.run(task, ctx), ctx), self.episode_timeout_s)
                return self._accept(task, group, identity, rows, attempt, provenance)
            except asyncio.CancelledError:  # the caller gave the episode up (a rollout stream's straggler)
                self._close_later(env, session_id)
                raise
            except TimeoutError:
                return self._end(task, group, env, ctx, provenance, Status.TIMEOUT,
                                 f"episode exceeded {self.episode_timeout_s:g} s (during {ctx.stage.value})",
                                 ctx.stage, FailureKind.TIMEOUT)
            except self.infra as e:
                self._close_later(env, session_id)
                if retries >= self.max_retries:
                    failure = infra_failure(e, ctx.stage)
                    return [failed_row(task, group, identity["rollout_index"], Status.INFRA_ERROR,
                                       f"{type(e).__name__}: {e} (after {retries + 1} attempts)", failure,
                                       attempt, **provenance)]
                retries += 1
                spent.retried()
                if self.telemetry is not None:
                    self.telemetry.retried(task.env)
                await asyncio.sleep(min(0.2 * 2**retries, 5.0))
            except EnvCallError as e:
                return self._end(task, group, env, ctx, provenance, Status.ENV_ERROR, str(e), ctx.stage,
                                 FailureKind.EXCEPTION)
            except PolicyCallError as e:
                return self._end(task, group, env, ctx, provenance, Status.MODEL_ERROR, str(e),
                                 FailureStage.GENERATE, FailureKind.EXCEPTION)
            except Exception as e:
                tb = traceback.format_exception(e)[-3:]
                return self._end(task, group, env, ctx, provenance, Status.ABORTED,
                                 f"agent raised {type(e).__name__}: {e}\n" + "".join(tb),
                                 FailureStage.AGENT, FailureKind.EXCEPTION)

    def _end(self, task: Task, group: Group, env, ctx: EpisodeContext, provenance: dict, status: Status,
             error: str, stage: FailureStage, kind: FailureKind) -> list[Rollout]:
        """The one failed row of an episode that raised; its session is freed in the background."""
        self._close_later(env, ctx.session_id)
        return [failed_row(task, group, ctx.rollout_index, status, error, Failure(stage=stage, kind=kind),
                           ctx.attempt, **provenance)]

    def _accept(self, task: Task, group: Group, identity: dict, rows: list[Rollout], attempt: int,
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
                    r.task_json = task.model_dump_json()
                if r.sampling_params_json == "{}":
                    r.sampling_params_json = provenance["sampling_params_json"]
                if not r.model:
                    r.model = provenance["model"]
        except RolloutInvariantError as e:
            return [failed_row(task, group, identity["rollout_index"], Status.ABORTED,
                               f"agent produced an invalid row: {e}",
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
