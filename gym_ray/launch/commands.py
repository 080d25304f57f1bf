"""The commands as use cases: `run` (check, claim the output directory, deploy, collect, report, tear down),
`serve` (deploy and leave running) and `collect_served` (collect against what `serve` started). Everything
that can be checked in seconds is checked before Ray starts; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from gym_ray.collect.api import Collector, check_output_dir, load_run_tasks
from gym_ray.collect.identity import run_identity
from gym_ray.config import ConfigError, RunConfig
from gym_ray.launch import deploy
from gym_ray.launch.preflight import check_parts
from gym_ray.report.finish import finish_run
from gym_ray.rundir import RunDir, hold
from gym_ray.types import Task

# `gym-ray run` / `collect` exit with this when a monitor set to `on_alert: stop` ended the collection: every
# finished group is written and reported; `--resume` runs the rest.
MONITOR_STOP_EXIT = 3


def exit_status(summary: dict) -> int:
    """0, or MONITOR_STOP_EXIT when a monitor stopped the run."""
    return MONITOR_STOP_EXIT if summary.get("run", {}).get("stopped_by") else 0


def run(cfg: RunConfig, source: str, *, address: str | None = None,
        keep: Callable[[deploy.Deployment], None] | None = None) -> dict:
    """Deploy what `cfg` (read from `source`) describes, collect every task into `collect.output_dir`, check
    and report, tear down; the metrics summary. Bad data, a part that cannot be built and an unusable
    output_dir fail before Ray starts. With `keep` the apps stay up: it gets the deployment after the
    collection, and the run ends when it returns."""
    tasks = load_run_tasks(cfg)
    check_parts(cfg, source)
    with claimed(cfg, tasks):
        started = deploy.connect_ray(cfg, address)
        dep = None
        try:
            t0 = time.monotonic()
            dep = deploy.deploy_all(cfg)
            print(f"deployed {sorted(dep.apps)} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
            summary = collect_into(cfg, dep.apps, tasks)
            if keep is not None:
                keep(dep)
            return summary
        finally:
            if dep is not None and keep is None:
                deploy.teardown(dep)
            if started:
                _shutdown_ray()


def serve(cfg: RunConfig, source: str, *, address: str | None = None) -> deploy.Deployment:
    """Deploy the model(s) and environments of `cfg` and leave them running (`gym-ray serve`)."""
    check_parts(cfg, source)
    deploy.connect_ray(cfg, address)
    return deploy.deploy_all(cfg)


def collect_served(cfg: RunConfig, source: str, *, address: str | None = None) -> dict:
    """Collect against the apps `serve` started on the cluster at `address` (`gym-ray collect`)."""
    tasks = load_run_tasks(cfg)
    check_parts(cfg, source, hosted=False)
    with claimed(cfg, tasks):
        started = deploy.connect_ray(cfg, address)
        try:
            try:
                apps = deploy.running_apps(cfg)
            except RuntimeError as e:
                raise ConfigError(str(e)) from None
            return collect_into(cfg, apps, tasks)
        finally:
            if started:
                _shutdown_ray()


@contextlib.contextmanager
def claimed(cfg: RunConfig, tasks: list[Task]) -> Iterator[None]:
    """Lock `collect.output_dir` (it must take writes) and check it fits the run, before anything slow:
    a busy, read-only, full or foreign directory fails in a second, not after the deploy."""
    with hold(cfg.collect.output_dir):
        check_output_dir(cfg.collect.output_dir, cfg.collect.resume, run_identity(cfg, tasks))
        yield


def collect_into(cfg: RunConfig, apps: dict[str, str], tasks: list[Task]) -> dict:
    """The collection itself, then the health checks, the dataset card and the report."""
    with Collector(cfg, apps=apps) as collector:
        summary = asyncio.run(collector.collect_to_dir(tasks, cfg.collect.output_dir, resume=cfg.collect.resume))
    if RunDir.of(cfg.collect.output_dir).remote:  # the rows and metrics are there; the report needs a local dir
        print(f"report: gym-ray report <a local copy of {cfg.collect.output_dir}>", file=sys.stderr)
    else:
        finish_run(cfg.collect.output_dir)
    return summary


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
