"""`gym-ray reverify RUN -o NEW_RUN`: the stored episodes scored again by a verifier (the run's own config, or
another one's), with no policy calls and every token untouched, into a new run directory.

Each re-scored row keeps its old reward (`previous_reward`) and names the verifier that gave the new one
(`verifier`). Episodes that did not reach verification (a failed row for another stage) are copied as they
are. An environment whose verify reads the episode's state (`ResourceServer.verify_reads_state`) gets a fresh
session with the row's recorded tool calls replayed into it, and is scored only when every result matches
the record; otherwise the row fails with a status saying why, so a reward is never guessed.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gym_ray.collect.metrics import metrics_from_dir, write_metrics
from gym_ray.collect.sink import ParquetSink
from gym_ray.errors import Delivery, Failure, FailureKind, FailureStage, Status
from gym_ray.redact import redact
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.resources.server import ResourceServer
from gym_ray.reverify.replay import replay_episode
from gym_ray.reverify.stored import (
    env_runtime,
    run_config,
    stored_messages,
    stored_task,
    unrecorded,
    verifier_identity,
)
from gym_ray.rundir import RunDir, RunInputError, hold, read_run
from gym_ray.rundir.location import CONFIG, MANIFEST
from gym_ray.types import Rollout, VerifyResult, rollouts_from_arrow, rollouts_to_arrow

RESCORED, CHANGED, FAILED, KEPT = "rescored", "changed", "failed", "kept"


@dataclass
class Reverified:
    """What `reverify_run` did: the verifier of each env and, per env, how many episodes were re-scored,
    changed their reward or status, failed re-verification, or were kept as they were."""

    out: str
    verifiers: dict[str, str]
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))


def reverify_run(run_dir: str | Path, out_dir: str | Path, config: str | Path | None = None,
                 concurrency: int = 16) -> Reverified:
    run, out = RunDir.of(run_dir), RunDir.of(out_dir)
    if str(run) == str(out):
        raise RunInputError(f"-o {out}: the run itself; give a new directory for the re-scored rows")
    rows = rollouts_from_arrow(read_run(run))
    cfg, source = run_config(run, config)
    envs = sorted({r.env for r in rows})
    runtimes = {e: env_runtime(cfg, e, source) for e in envs}
    result = Reverified(str(out), {e: verifier_identity(cfg, e) for e in envs})
    episodes: dict[str, list[Rollout]] = defaultdict(list)
    for r in rows:
        episodes[r.rollout_id].append(r)
    with hold(out):
        if out.parts():
            raise RunInputError(f"-o {out}: already holds rollout files; give a new directory")
        scored = asyncio.run(_all(list(episodes.values()), runtimes, cfg, result, concurrency))
        sink = ParquetSink(out)
        for group in _groups(scored):
            sink.write(rollouts_to_arrow(group))
        sink.close()
        _write_meta(run, out, cfg, result)
    return result


async def _all(episodes: list[list[Rollout]], runtimes: dict[str, EnvRuntime], cfg, result: Reverified,
               concurrency: int) -> list[list[Rollout]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(rows: list[Rollout]) -> list[Rollout]:
        rows = sorted(rows, key=lambda r: r.segment_index)
        env = rows[-1].env
        async with sem:
            outcome, new = await _rescore(rows, runtimes[env], cfg.envs[env].agent.max_tool_output_chars,
                                          result.verifiers[env])
        result.counts[env][outcome] += 1
        if outcome == RESCORED and (new[-1].reward, new[-1].status) != (rows[-1].reward, rows[-1].status):
            result.counts[env][CHANGED] += 1
        return new

    return await asyncio.gather(*(one(rows) for rows in episodes))


def _rescorable(row: Rollout) -> bool:
    """An episode that reached verification: scored (`ok`), or its verification failed."""
    return row.status == Status.OK or row.failure_stage == FailureStage.VERIFICATION


async def _rescore(rows: list[Rollout], runtime: EnvRuntime, cap: int, verifier: str) -> tuple[str, list[Rollout]]:
    last = rows[-1]
    if not _rescorable(last):
        return KEPT, rows
    server: type[ResourceServer] = type(runtime.server)
    plain = last.model_dump()
    task = stored_task(plain)
    needs_state = server.needs_live_state()
    if server.reset is not ResourceServer.reset and (needs_state or server.verify is ResourceServer.verify):
        return FAILED, _failed(rows, verifier, "a step-driven episode is scored on the state its steps built, "
                                               "which only the live session held (steps are not recorded)")
    if needs_state and (why := unrecorded(plain)):
        return FAILED, _failed(rows, verifier, f"verify reads the episode's live state, and its {why}")
    sid = f"reverify-{last.rollout_id}"
    try:
        if needs_state:
            _, divergences = await replay_episode(runtime, task, plain, cap, sid, close=False)
            if divergences:
                d = divergences[0]
                return FAILED, _failed(rows, verifier, f"verify reads the episode's live state, and replaying its "
                                                       f"tool calls diverged at {d.line()}")
        else:
            await runtime.seed_session(sid, task)
        verdict = await runtime.verify(sid, task, stored_messages(plain))
    except Exception as e:  # noqa: BLE001 - a seed or a session that fails now: this row's failure
        verdict = VerifyResult(error=f"{type(e).__name__}: {e}")
    finally:
        await runtime.close_session(sid)
    return RESCORED, _scored(rows, verdict, verifier)


def _scored(rows: list[Rollout], verdict: VerifyResult, verifier: str) -> list[Rollout]:
    last = rows[-1]
    metrics = json.loads(last.metrics_json or "{}")
    metrics["reverify_info"] = verdict.info
    if verdict.error:
        return _failed(rows, verifier, f"verify: {verdict.error}", verdict.error_kind or FailureKind.EXCEPTION,
                       metrics)
    out = []
    for r in rows:
        update = dict(previous_reward=r.reward, verifier=verifier, reward=verdict.reward,
                      reward_component_names=list(verdict.components),
                      reward_component_values=[float(v) for v in verdict.components.values()])
        if r is last:
            update.update(metrics_json=json.dumps(metrics, ensure_ascii=False, default=str))
            if r.status != Status.OK:  # its verification failed before; it is scored now
                update.update(status=Status.OK, error=None, mask_sample=False, failure_stage=None,
                              failure_kind=None, failure_delivery=None)
        out.append(r.model_copy(update=update))
    return out


def _failed(rows: list[Rollout], verifier: str, why: str, kind: FailureKind = FailureKind.SESSION_LOST,
            metrics: dict | None = None) -> list[Rollout]:
    """The episode's rows with the last one failed at verification: masked, no reward (the old one kept in
    `previous_reward`)."""
    last = rows[-1]
    unscored = dict(verifier=verifier, reward=0.0, reward_component_names=[], reward_component_values=[])
    out = [r.model_copy(update=dict(previous_reward=r.reward, **unscored)) for r in rows[:-1]]
    row = last.model_copy(update=dict(previous_reward=last.reward, status=Status.ENV_ERROR, mask_sample=True,
                                      error=redact(f"reverify: {why}"), **unscored))
    row.set_failure(Failure(stage=FailureStage.VERIFICATION, kind=kind, delivery=Delivery.NOT_SENT))
    if metrics is not None:
        row.metrics_json = json.dumps(metrics, ensure_ascii=False, default=str)
    return [*out, row]


def _groups(episodes: list[list[Rollout]]) -> list[list[Rollout]]:
    """Rows by group, in the run's order: a part file holds whole groups."""
    groups: dict[str, list[Rollout]] = defaultdict(list)
    for rows in episodes:
        groups[rows[0].group_id].extend(rows)
    return list(groups.values())


def _write_meta(run: RunDir, out: RunDir, cfg, result: Reverified) -> None:
    """NEW_RUN's config (the one that verified), manifest (the run's, naming where the rows came from) and
    metrics, so check, report and metrics read it as any run."""
    out.write_bytes(out.meta(CONFIG), (redact(cfg.model_dump_json(indent=2)) + "\n").encode())
    if run.is_file(run.manifest):
        try:
            manifest = json.loads(run.read_bytes(run.manifest))
        except ValueError:
            manifest = None
        if isinstance(manifest, dict):
            manifest.update(reverified_from=str(run), verifiers=result.verifiers)
            out.write_bytes(out.meta(MANIFEST), (json.dumps(manifest) + "\n").encode())
    write_metrics(metrics_from_dir(out), out)


def format_reverified(r: Reverified) -> str:
    lines = [f"reverified into {r.out}"]
    for env, verifier in r.verifiers.items():
        c = r.counts[env]
        lines.append(f"  {env}: {c[RESCORED]} re-scored ({c[CHANGED]} changed), {c[FAILED]} failed "
                     f"re-verification, {c[KEPT]} kept (not verified when played); verifier {verifier}")
    return "\n".join(lines)
