"""The Python API a trainer driver (or the CLI) calls: a batch of tasks against a policy, rollouts back.

    collector = Collector(cfg, policy=my_policy_client)          # or a ModelConfig, or cfg.model
    groups = collector.collect_sync(tasks)                         # complete groups, input order
    async for group in collector.stream_groups(tasks): ...         # complete groups, completion order
    summary = await collector.collect_to_dir(tasks, "runs/x")      # Parquet + .gym_ray/metrics.json (the CLI's path)

With `collect.monitors`, every table of finished groups goes through the online monitors (gym_ray.monitors)
before it is handed on; once a monitor set to `on_alert: stop` fires, that table is the last: the groups
still running are cancelled (their episodes close their env sessions and leave no row, so `--resume` runs
them again), none not started begins, and `collector.stopped_by` holds the alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from gym_ray.clients import EnvClient, PolicyClient
from gym_ray.collect.identity import difference, run_identity
from gym_ray.collect.metrics import MetricsAccumulator, env_metrics, format_table, write_metrics
from gym_ray.collect.plan import GroupSpec, plan_groups
from gym_ray.collect.scheduler import Scheduler
from gym_ray.collect.sink import ParquetSink, ResumeError, done_groups
from gym_ray.collect.telemetry import AlertTelemetry
from gym_ray.collect.wiring import EnvSpec, WorkerSetup
from gym_ray.config import EnvConfig, ModelConfig, RunConfig
from gym_ray.monitors import ALERTS_FILE, Alert, MonitorRunner, print_alert
from gym_ray.redact import redact
from gym_ray.resources.runtime import check_forkable
from gym_ray.rundir import RunDir, RunInputError, hold, read_rollout_table
from gym_ray.rundir.location import CONFIG, MANIFEST, Location
from gym_ray.types import RolloutGroup, Task, rollouts_from_arrow


class Collector:
    """A pool of agent actors bound to one policy and the run's environments, reused across batches.

    `policy`: a PolicyClient (e.g. a trainer's own), a ModelConfig, or None for `config.model`.
    `envs`: per environment name, a ready EnvClient (a test double, a custom client) or nothing to build
    it from `config.envs[name]`. `apps`: Serve application names of deployments already running, keyed
    by env name and by `config.model.name`; an env without one runs in-process in each agent actor.
    """

    def __init__(
        self,
        config: RunConfig,
        policy: PolicyClient | ModelConfig | None = None,
        *,
        envs: dict[str, EnvClient] | None = None,
        agent_classes: dict[str, Any] | None = None,
        apps: dict[str, str] | None = None,
    ):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("Collector needs Ray: call ray.init(...) first (the CLI does it for you)")
        apps = apps or {}
        self.config = config
        specs = {
            name: EnvSpec(config=env_cfg, client=(envs or {}).get(name), app_name=apps.get(name))
            for name, env_cfg in config.envs.items()
        }
        missing = set(envs or {}) - set(specs)
        if missing:
            raise ValueError(f"env clients given for {sorted(missing)}, which config.envs does not define")
        c = config.collect
        if c.tree is not None:  # an env given as a client is checked where it is used
            for name, spec in specs.items():
                if spec.client is None:
                    check_forkable(name, spec.config)
        setup = WorkerSetup(
            policy=policy if policy is not None else config.model,
            policy_app=apps.get(config.model.name),
            chat_template=config.model.chat_template,
            envs=specs,
            sampling=c.sampling,
            agent_classes=agent_classes or {},
            episode_timeout_s=c.episode_timeout_s,
            max_retries=c.max_retries,
            tree=c.tree,
        )
        # rows per group: with collect.tree, num_repeats trees of up to width^depth leaves each
        self.num_repeats = c.num_repeats * (c.tree.leaves if c.tree else 1)
        self._policy = setup.policy
        self.scheduler = Scheduler(setup, c.num_agents, c.concurrency, c.max_retries)
        self.monitors = _monitor_runner(config)

    @property
    def stopped_by(self) -> Alert | None:
        """The alert of the monitor (`on_alert: stop`) that stopped collection, if one did."""
        return self.monitors.stopped_by if self.monitors is not None else None

    async def start(self) -> list[dict]:
        """Wait for every agent actor to build its clients; raises `ActorStartError` with the cause."""
        return await self.scheduler.start()

    def plan(self, tasks: list[Task], num_repeats: int | None = None, run_id: str | None = None) -> list[GroupSpec]:
        return plan_groups(tasks, num_repeats or self.num_repeats, run_id or uuid.uuid4().hex)

    async def stream_tables(self, groups: list[GroupSpec]) -> AsyncIterator[pa.Table]:
        """Arrow tables (ROLLOUT_SCHEMA) of complete groups, in completion order (cut short by a monitor's
        stop: module docstring)."""
        if self.stopped_by is not None:
            return
        left = {g.group_id for g in groups}
        async with contextlib.aclosing(self.scheduler.run(groups)) as tables:
            async for table in tables:
                if self.monitors is not None:
                    await self.monitors.observe(table)
                    left.difference_update(table.column("group_id").unique().to_pylist())
                yield table
                if self.stopped_by is not None:
                    await self.scheduler.cancel(left)
                    return

    async def stream_groups(self, tasks: list[Task], num_repeats: int | None = None) -> AsyncIterator[RolloutGroup]:
        """Complete groups as they finish (NeMo-RL / async-trainer style)."""
        async for table in self.stream_tables(self.plan(tasks, num_repeats)):
            for group in tables_to_groups([table]):
                yield group

    async def collect(self, tasks: list[Task], num_repeats: int | None = None) -> list[RolloutGroup]:
        """All groups, complete, in the order of `tasks` (VeRL `generate_sequences` style); only those that
        finished when a monitor stopped collection (`stopped_by`)."""
        groups = self.plan(tasks, num_repeats)
        tables = [t async for t in self.stream_tables(groups)]
        by_id = {g.group_id: g for g in tables_to_groups(tables)}
        return [by_id[g.group_id] for g in groups if g.group_id in by_id]

    def collect_sync(self, tasks: list[Task], num_repeats: int | None = None) -> list[RolloutGroup]:
        return asyncio.run(self.collect(tasks, num_repeats))

    async def collect_to_dir(
        self,
        tasks: list[Task],
        output_dir: str | Path | RunDir,
        *,
        resume: bool = False,
        progress: bool = True,
        out=None,
    ) -> dict:
        """Stream rows into `<output_dir>/part-*.parquet`, then write and print the metrics (gym_ray.rundir
        says where the run's other files go).

        Monitor alerts go to `.gym_ray/alerts.jsonl` (appended to on resume) and the progress line; a stop
        ends the run with every finished group written and `summary["run"]["stopped_by"]` set.

        With `resume`, groups already in the directory are skipped (files hold whole groups), so a
        crashed run completes with no duplicates and no gaps. The directory is locked meanwhile: a second
        run into it (any process) fails at once with `RunDirError`.
        """
        with hold(output_dir) as run:
            _warn_if_node_local(run)
            return await self._collect_into(tasks, run, resume, progress, out or sys.stdout)

    async def _collect_into(self, tasks: list[Task], output_dir: RunDir, resume: bool, progress: bool, out) -> dict:
        c = self.config.collect
        run_id, done = _open_run(output_dir, resume, run_identity(self.config, tasks, self._policy))
        groups = plan_groups(tasks, self.num_repeats, run_id)
        config = redact(self.config.model_dump_json(indent=2))
        _write_meta(output_dir, CONFIG, json.loads(config))
        todo = [g for g in groups if g.key not in done]
        acc = MetricsAccumulator(metrics=env_metrics({n: e.server for n, e in self.config.envs.items()}))
        if done:
            acc.add(read_rollout_table(output_dir))
            print(f"resuming {output_dir}: {len(done)} of {len(groups)} groups already written", file=out)
        sink = ParquetSink(output_dir, c.rows_per_file, c.roll_seconds)
        bar = _progress(len(groups) * self.num_repeats, (len(groups) - len(todo)) * self.num_repeats, progress)
        started = time.monotonic()

        async def roll_timer() -> None:
            while True:
                await asyncio.sleep(min(1.0, c.roll_seconds))
                sink.maybe_roll()

        timer = asyncio.create_task(roll_timer())
        episodes = retried = 0
        regrouped_before = self.scheduler.regrouped
        alerts_path = output_dir.meta(ALERTS_FILE)
        earlier = output_dir.read_bytes(alerts_path) if resume and output_dir.is_file(alerts_path) else b""
        alerted = len(self.monitors.alerts) if self.monitors is not None else 0
        try:
            async for table in self.stream_tables(todo):
                sink.write(table)
                acc.add(table)
                n = _episodes_in(table)
                episodes += n
                retried += _retried_in(table)
                bar.update(n)
                if self.monitors is not None and len(self.monitors.alerts) > alerted:
                    alerted = len(self.monitors.alerts)
                    output_dir.write_bytes(alerts_path, earlier + self.monitors.jsonl())
                    bar.set_postfix_str(self.monitors.status())
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            sink.close()
            bar.close()
        elapsed = time.monotonic() - started
        summary = acc.summary()
        regrouped = self.scheduler.regrouped - regrouped_before
        summary["run"] = {"run_id": run_id, "output_dir": str(output_dir), "files": len(output_dir.parts()),
                          "episodes_this_session": episodes, "seconds_this_session": round(elapsed, 3),
                          "retried_rollouts": retried, "regrouped_groups": regrouped}
        if self.monitors is not None:
            summary["run"]["monitor_alerts"] = len(self.monitors.alerts)
        if self.stopped_by is not None:
            summary["run"]["stopped_by"] = self.stopped_by.to_json()
        write_metrics(summary, output_dir)
        print(format_table(summary), file=out)
        if retried or regrouped:
            print(f"\nretried: {retried} rollouts ran again after an infrastructure failure (attempt >= 1); "
                  f"{regrouped} groups re-dispatched after their agent actor was lost", file=out)
        print(f"\n{episodes} rollouts in {elapsed:.1f} s -> {output_dir}/", file=out)
        if self.stopped_by is not None:
            print(f"stopped by monitor {self.stopped_by.line()}\nevery finished group is written; the groups "
                  "still running were cancelled and left no row (--resume runs them)", file=out)
        return summary

    def shutdown(self) -> None:
        self.scheduler.shutdown()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _monitor_runner(config: RunConfig) -> MonitorRunner | None:
    """The monitors `collect.monitors` names, each alert printed and counted in the Ray metrics; None for none."""
    if not config.collect.monitors.enabled:
        return None
    telemetry = AlertTelemetry()

    def on_alert(alert: Alert) -> None:
        print_alert(alert)
        telemetry.alert(alert.monitor, alert.on_alert)

    return MonitorRunner(config.collect.monitors, config.envs, on_alert)


def load_run_tasks(cfg: RunConfig) -> list[Task]:
    """Every env's `data` files (rows default to that env), or, with none listed, the env's own tasks (a
    verifiers taskset); `collect.limit` caps tasks per env."""
    from gym_ray.tasks import TaskLoadError, load_tasks

    seen: dict[str, str] = {}
    tasks = [t for name, env in cfg.envs.items()
             for t in (load_tasks(env.data, default_env=name, limit=cfg.collect.limit, envs=cfg.envs, seen=seen)
                       if env.data else own_tasks(name, env, cfg.collect.limit))]
    if not tasks:
        raise TaskLoadError("no tasks: no env in the config lists `data` files with rows")
    return tasks


def own_tasks(name: str, env: EnvConfig, limit: int | None) -> list[Task]:
    """The tasks an env brings itself (`ResourceServer.tasks`); none for an env without `data` or a dataset."""
    from gym_ray.resources.runtime import import_server
    from gym_ray.tasks import TaskLoadError

    server_cls = import_server(env.server)
    if not server_cls.has_tasks():
        return []
    try:
        return server_cls(**env.config).tasks(name, limit)
    except (TypeError, ValueError) as e:
        raise TaskLoadError(f"envs.{name}: its own tasks: {e}") from None


def tables_to_groups(tables: list[pa.Table]) -> list[RolloutGroup]:
    by_group: dict[str, list] = defaultdict(list)
    for table in tables:
        for r in rollouts_from_arrow(table):
            by_group[r.group_id].append(r)
    groups = []
    for gid, rows in by_group.items():
        rows.sort(key=lambda r: (r.rollout_index, r.segment_index))
        groups.append(RolloutGroup(group_id=gid, task_id=rows[0].task_id, rollouts=rows))
    return groups


def _episodes_in(table: pa.Table) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.equal(table["segment_index"], 0)).as_py() or 0)


def _retried_in(table: pa.Table) -> int:
    """Episodes of `table` that ran more than once (a lost session, replica, actor or node)."""
    import pyarrow.compute as pc

    first = pc.equal(table["segment_index"], 0)
    return int(pc.sum(pc.and_(first, pc.greater(table["attempt"], 0))).as_py() or 0)


def check_output_dir(output_dir: str | Path | RunDir, resume: bool, identity: dict) -> str | None:
    """The run id to resume, or None for a new run. Refuses, in one line, a directory this run cannot
    complete: rows without `resume`, another run (`identity`, from `run_identity`: other tasks, group size or
    data-shaping config), a part file that cannot be read or an incomplete group. The CLI calls it before Ray
    starts, `_open_run` again under the lock."""
    return _check(RunDir.of(output_dir), resume, identity)[0]


def _check(output_dir: RunDir, resume: bool, identity: dict) -> tuple[str | None, dict, dict[tuple[str, str], str]]:
    """(run id or None, the manifest or {}, the groups already written)."""
    if not resume:
        if output_dir.parts():
            raise ResumeError(f"{output_dir} already holds rollouts; pass --resume to complete that run, "
                              "or choose another collect.output_dir")
        return None, {}, {}
    manifest = output_dir.manifest
    data = _read_manifest(output_dir, manifest) if output_dir.is_file(manifest) else {}
    if data:
        why = difference(data.get("identity") or _recorded_before_identities(data, identity), identity)
        if why:
            raise ResumeError(f"{output_dir}: --resume refused: {why}; resume with the run's own tasks and "
                              "config, or choose another collect.output_dir")
    try:
        done = done_groups(output_dir)
    except RunInputError as e:  # a part cut short or of another schema
        raise ResumeError(f"{e}; move it out of the directory and --resume runs its groups again "
                          "(a part holds whole groups)") from None
    return data.get("run_id"), data, done


def _recorded_before_identities(data: dict, identity: dict) -> dict:
    """A manifest older than run identities records only the group size; the rest is taken as this run's."""
    return {**identity, "collect": {**identity["collect"], "num_repeats": data["num_repeats"]}}


def _open_run(output_dir: str | Path | RunDir, resume: bool,
              identity: dict) -> tuple[str, dict[tuple[str, str], str]]:
    """Create or reopen a run directory: (run id, groups already written). The manifest pins the run id
    (hence the group ids) and records what the run is, so a resume can tell its own data from another's."""
    output_dir = RunDir.of(output_dir)
    run_id, data, done = _check(output_dir, resume, identity)
    if run_id is None or "identity" not in data:
        run_id = run_id or uuid.uuid4().hex
        _write_meta(output_dir, MANIFEST, {
            "run_id": run_id, "num_repeats": identity["collect"]["num_repeats"],
            "num_tasks": identity["tasks"]["count"], "identity": identity})
    return run_id, done


def _read_manifest(run: RunDir, path: Location) -> dict:
    try:
        data = json.loads(run.read_bytes(path).decode("utf-8"))
        if not (isinstance(data["run_id"], str) and isinstance(data["num_repeats"], int)
                and isinstance(data.get("identity", {}), dict)):
            raise TypeError("run_id, num_repeats or identity has the wrong type")
    except (OSError, ValueError, KeyError, TypeError) as e:
        empty = isinstance(e, json.JSONDecodeError) and not e.doc.strip()
        why = "the file is empty" if empty else f"{type(e).__name__}: {e}".splitlines()[0]
        raise ResumeError(f"{path}: not a valid run manifest ({why}); restore it, or delete it to resume with "
                          "a new run id (finished groups are kept)") from None
    return data


def _write_meta(run: RunDir, name: str, data: dict) -> None:
    """`.gym_ray/<name>` as JSON, replaced whole: a crash leaves the old file or the new one, never a torn one."""
    run.write_bytes(run.meta(name), (json.dumps(data) + "\n").encode())


def _warn_if_node_local(output_dir: RunDir) -> None:
    """A local output_dir on a multi-node cluster holds the rows on the driver's machine only: say so."""
    import ray

    if output_dir.remote:
        return
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception:  # noqa: BLE001 - no cluster to ask: nothing to warn about
        return
    if len(nodes) > 1:
        print(f"gym-ray: warning: collect.output_dir {output_dir} is a local path on a {len(nodes)}-node cluster: "
              "the rows land on the driver's machine only; use shared storage (s3://bucket/prefix, NFS) to "
              "read them from other nodes or resume from another driver", file=sys.stderr, flush=True)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="rollout", desc="collecting", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)
