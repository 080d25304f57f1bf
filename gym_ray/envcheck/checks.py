"""`gym-ray env check`: an environment's problems found in seconds, before a long run finds them in rows.

In-process, no Ray: the server is built through the in-process client, as an agent actor builds it. Checks,
in order: the server and the scripted policy import; every tool's parameters have a type and a docstring
entry; every task row parses and fits the environment (its env name, the tools it names, the metadata keys
the server's code reads); a round trip per task (an episode of the config's scripted policy, else seed and
verify of the task's reference answer or a placeholder one); `verify` (a step-driven env's reset and step)
answers the same twice; the time of each call.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gym_ray.agents.choose import step_driven
from gym_ray.config import EnvConfig, RunConfig
from gym_ray.envcheck.load import EnvCheckInputError, PackageImportError, load_env_config, locate
from gym_ray.envcheck.static import metadata_reads
from gym_ray.resources.local import LocalEnvClient
from gym_ray.resources.runtime import import_server
from gym_ray.resources.server import ResourceServer
from gym_ray.tasks import parse_row
from gym_ray.types import Message, Task, VerifyResult

# The answer `model.kind=scripted` gives without a script: a round trip where no reference answer exists.
PLACEHOLDER_ANSWER = "I don't know."
SLOW_VERIFY_S = 10.0


def _boxed(key: str) -> Callable[[dict], str | None]:
    return lambda meta: f"\\boxed{{{meta[key]}}}" if isinstance(meta.get(key), str | int | float) else None


def _humaneval(meta: dict) -> str | None:
    if isinstance(meta.get("prompt"), str) and isinstance(meta.get("canonical_solution"), str):
        return f"```python\n{meta['prompt']}{meta['canonical_solution']}```"
    return None


# A task's reference answer, in the form its verifier reads, by the metadata key that holds it: HumanEval's
# canonical solution completes its prompt; math, mcqa and MMATH put the expected answer in \boxed{}.
REFERENCES: dict[str, Callable[[dict], str | None]] = {
    "canonical_solution": _humaneval,
    "expected_answer": _boxed("expected_answer"),
    "answer": _boxed("answer"),
}


@dataclass
class Finding:
    check: str
    env: str
    target: str
    status: str  # ok | warn | error
    detail: str
    ms: float | None = None


@dataclass
class Report:
    config: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "warn"]


def check_env(target: str, limit: int | None = 50) -> Report:
    """Check the environment(s) of `target` (a name, a package folder or a run config); round trips and
    determinism on the first `limit` tasks (None: all). Bad input raises `EnvCheckInputError`."""
    if limit is not None and limit < 1:
        raise EnvCheckInputError(f"--limit {limit}: give at least 1")
    config = locate(target)
    report = Report(config)
    try:
        cfg = load_env_config(config)
    except PackageImportError as e:
        report.findings.append(Finding("import", "-", str(config.parent), "error", str(e)))
        return report
    for name, env in cfg.envs.items():
        report.findings.extend(EnvChecker(name, env, cfg, limit).run())
    return report


class EnvChecker:
    """The checks of one environment of a run config."""

    def __init__(self, name: str, env: EnvConfig, cfg: RunConfig, limit: int | None) -> None:
        self.name, self.env, self.cfg, self.limit = name, env, cfg, limit
        self.findings: list[Finding] = []
        self.times: dict[str, list[float]] = {}

    def add(self, check: str, target: str, status: str, detail: str, ms: float | None = None) -> None:
        self.findings.append(Finding(check, self.name, target, status, detail, ms))

    def run(self) -> list[Finding]:
        started = time.perf_counter()
        try:
            server_cls = import_server(self.env.server)
        except Exception as e:
            self.add("import", self.env.server, "error", _one_line(e))
            return self.findings
        client = LocalEnvClient(self.name, self.env)
        try:
            client.build()
        except Exception as e:
            self.add("import", self.env.server, "error", f"building it with its config: {_one_line(e)}")
            return self.findings
        self.add("import", self.env.server, "ok", "imported and built", _ms(started))
        script = self._script()
        self._tools(server_cls)
        tasks = self._tasks(server_cls, client.runtime.server)
        if tasks:
            asyncio.run(self._round_trips(client, server_cls, tasks[: self.limit], script))
        self._timing()
        return self.findings

    # --- import -----------------------------------------------------------------------------------
    def _script(self) -> Any:
        """The config's scripted policy (model.script / model.replies), or None when the model is another."""
        model = self.cfg.model
        if model.kind != "scripted" or not (model.script or model.replies):
            return None
        from gym_ray.models.client import make_policy_client
        from gym_ray.models.scripted import load_script, reply_text

        started = time.perf_counter()
        try:  # the script (or the replies) now, so a bad one is its own finding, not every episode's error
            if model.script:
                load_script(model.script)
            for i, reply in enumerate(model.replies):
                reply_text(reply, f"model.replies[{i}]")
            policy = make_policy_client(model.model_copy(update={"hosting": "local"}), app_name=self.name)
        except Exception as e:
            self.add("import", "model.script", "error", _one_line(e))
            return None
        self.add("import", "model.script", "ok", model.script or f"{len(model.replies)} replies", _ms(started))
        return policy

    # --- tools ------------------------------------------------------------------------------------
    def _tools(self, server_cls: type[ResourceServer]) -> None:
        for tool in server_cls.tool_defs.values():
            props = tool.spec.parameters.get("properties", {})
            problems = [] if tool.spec.description.strip() else ["no description (the docstring's summary)"]
            for param, info in tool.args_model.model_fields.items():
                if not (info.description or "").strip():
                    problems.append(f"parameter {param!r} has no description (an `Args:` entry of the docstring)")
                schema = props.get(param, {})
                if not any(k in schema for k in ("type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const")):
                    problems.append(f"parameter {param!r} has no JSON type (its hint is Any or unannotated)")
            n = len(tool.args_model.model_fields)
            if problems:
                self.add("tool", tool.name, "error", "; ".join(problems))
            else:
                self.add("tool", tool.name, "ok", f"{n} parameter{'s' * (n != 1)}, typed and documented")

    # --- task rows --------------------------------------------------------------------------------
    def _tasks(self, server_cls: type[ResourceServer], server: ResourceServer) -> list[Task]:
        located: list[tuple[str, Task | str]] = []  # (where, the task or why its row is unusable)
        if self.env.data:
            for path in self.env.data:
                located.extend(self._rows(Path(path)))
        elif server_cls.has_tasks():
            try:
                own = server.tasks(self.name, self.limit)
            except Exception as e:
                self.add("task", "server.tasks()", "error", _one_line(e))
                return []
            located = [(f"task {i}", t) for i, t in enumerate(own)]
        else:
            self.add("task", "data", "error", "no data files, and the server brings no tasks of its own")
            return []
        reads = metadata_reads(server_cls)
        tools = set(server_cls.tool_defs)
        seen: dict[str, str] = {}
        for where, task in located:
            if isinstance(task, str):
                self.add("task", where, "error", task)
                continue
            errors, warnings = [], []
            if task.env != self.name:
                errors.append(f"env {task.env!r} is not this environment ({self.name!r})")
            if task.task_id in seen:
                errors.append(f"task_id {task.task_id!r} already at {seen[task.task_id]}")
            seen.setdefault(task.task_id, where)
            if not server_cls.forwards_tools():
                unknown = [t.name for t in task.tools or [] if t.name not in tools]
                if unknown:
                    errors.append(f"tools {unknown} are not tools of the server (it has: {sorted(tools) or 'none'})")
            meta = task.verifier_metadata
            missing = [f"{k!r} ({at})" for k, at in reads.required.items() if k not in meta]
            if missing:
                warnings.append(f"verifier_metadata lacks {', '.join(missing)}, which the server reads")
            if reads.whole is None and (unread := sorted(set(meta) - reads.known())):
                warnings.append(f"verifier_metadata {unread} never read by the server")
            status = "error" if errors else "warn" if warnings else "ok"
            self.add("task", f"{where} ({task.task_id})", status, "; ".join(errors + warnings) or "fits the env")
        return [task for _, task in located if isinstance(task, Task)]

    def _rows(self, path: Path) -> list[tuple[str, Task | str]]:
        """Each row of a task file parsed on its own, so every bad row is named, not only the first."""
        try:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                raw = [(f"row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
            else:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
                raw = [(f"line {i}", line) for i, line in enumerate(lines, 1) if line.strip()]
        except (OSError, ValueError) as e:
            self.add("task", path.name, "error", f"cannot read the task file: {_one_line(e)}")
            return []
        out = []
        for i, (where, row) in enumerate(raw):
            where = f"{path.name}:{where}"
            try:
                row = json.loads(row) if isinstance(row, str) else row
                out.append((where, parse_row(row, self.name, f"{path.stem}-{i}")))
            except ValidationError as e:
                out.append((where, "; ".join(_field_error(err) for err in e.errors())))
            except (ValueError, TypeError, KeyError) as e:
                out.append((where, _one_line(e)))
        return out

    # --- round trips and determinism --------------------------------------------------------------
    async def _timed(self, call: str, awaitable: Awaitable) -> Any:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.times.setdefault(call, []).append(_ms(started))

    async def _round_trips(self, client: LocalEnvClient, server_cls: type[ResourceServer], tasks: list[Task],
                           script: Any) -> None:
        service = self._service(client, script) if script is not None else None
        stepped = step_driven(server_cls)
        for i, task in enumerate(tasks):
            target = task.task_id
            try:
                if service is not None:
                    await self._episode(service, task, target)
                elif stepped:
                    await self._reset_trip(client, task, f"rt{i}", target)
                else:
                    await self._verify_trip(client, task, f"rt{i}", target)
            except Exception as e:
                self.add("round trip", target, "error", _one_line(e))
            try:
                await self._determinism(client, task, stepped, f"det{i}", target)
            except Exception as e:
                self.add("determinism", target, "error", _one_line(e))

    def _service(self, client: LocalEnvClient, policy: Any):
        from gym_ray.episodes import EnvSpec, EpisodeService

        model, collect = self.cfg.model, self.cfg.collect
        return EpisodeService({self.name: EnvSpec(config=self.env, client=client)}, policy,
                              tokenizer=model.tokenizer, chat_template=model.chat_template,
                              sampling=collect.sampling, episode_timeout_s=collect.episode_timeout_s,
                              max_retries=0)

    async def _episode(self, service, task: Task, target: str) -> None:
        started = time.perf_counter()
        rows = await service.run(task, 0)
        ms = _ms(started)
        self.times.setdefault("episode", []).append(ms)
        bad = [r for r in rows if r.status != "ok"]
        if bad:
            self.add("round trip", target, "error", f"scripted episode: {bad[0].status}: {bad[0].error}", ms)
        elif rows[-1].reward < 1.0:
            self.add("round trip", target, "warn", f"the scripted policy scored {rows[-1].reward:g}", ms)
        else:
            self.add("round trip", target, "ok", f"scripted episode scored {rows[-1].reward:g}", ms)

    def _answer(self, task: Task) -> tuple[str, str | None]:
        """The task's reference answer (and the metadata key it came from), else the placeholder."""
        meta = task.verifier_metadata
        for key, form in REFERENCES.items():
            if key in meta and (answer := form(meta)) is not None:
                return answer, key
        return PLACEHOLDER_ANSWER, None

    async def _verify_trip(self, client: LocalEnvClient, task: Task, sid: str, target: str) -> None:
        answer, key = self._answer(task)
        started = time.perf_counter()
        await self._timed("seed", client.seed_session(sid, task))
        try:
            result = await self._timed("verify", client.verify(sid, task, _with_answer(task, answer)))
        finally:
            await client.close_session(sid)
        ms, source = _ms(started), f"verifier_metadata.{key}" if key else f"placeholder {answer!r}"
        if result.error:
            self.add("round trip", target, "error", f"verify of the {source} answer: {result.error}", ms)
        elif key and result.reward < 1.0:
            self.add("round trip", target, "warn", f"the reference answer ({source}) scored {result.reward:g}", ms)
        else:
            self.add("round trip", target, "ok", f"seed + verify of the {source} answer: {result.reward:g}", ms)

    async def _reset_trip(self, client: LocalEnvClient, task: Task, sid: str, target: str) -> None:
        started = time.perf_counter()
        try:
            await self._timed("reset", client.reset(sid, task))
            step = await self._timed("step", client.step(sid, PLACEHOLDER_ANSWER))
            result = await self._timed("verify", client.verify(sid, task, task.prompt))
        finally:
            await client.close_session(sid)
        if result.error:
            self.add("round trip", target, "error", f"verify after reset + one step: {result.error}", _ms(started))
        else:
            self.add("round trip", target, "ok", f"reset + step ({'done' if step.done else 'not done'}) + verify: "
                     f"{result.reward:g}", _ms(started))

    async def _determinism(self, client: LocalEnvClient, task: Task, stepped: bool, sid: str, target: str) -> None:
        """The same input twice: the same first observation and step (step-driven), the same verdict."""
        if stepped:
            seen = []
            for n in (1, 2):
                try:
                    first = await self._timed("reset", client.reset(f"{sid}.{n}", task))
                    step = await self._timed("step", client.step(f"{sid}.{n}", PLACEHOLDER_ANSWER))
                finally:
                    await client.close_session(f"{sid}.{n}")
                seen.append((first, step.observation, step.reward, step.done))
            same, what = seen[0] == seen[1], "reset and step"
            detail = "" if same else f": first {seen[0]!r}, then {seen[1]!r}"
        else:
            answer, _ = self._answer(task)
            messages = _with_answer(task, answer)
            await self._timed("seed", client.seed_session(sid, task))
            try:
                results = [await self._timed("verify", client.verify(sid, task, messages)) for _ in range(2)]
            finally:
                await client.close_session(sid)
            a, b = (_verdict(r) for r in results)
            same, what = a == b, "verify"
            detail = "" if same else f": first {a}, then {b}"
        status = "ok" if same else "error"
        self.add("determinism", target, status, f"{what} twice on the same input: "
                 f"{'the same' if same else 'different'}{detail}")

    def _timing(self) -> None:
        if not self.times:
            return
        parts = [f"{call} {statistics.fmean(ms):.1f} ms (max {max(ms):.1f}, n={len(ms)})"
                 for call, ms in self.times.items()]
        slow = max(self.times.get("verify", [0.0])) / 1000 > SLOW_VERIFY_S
        detail = "; ".join(parts) + (f"; a verify took over {SLOW_VERIFY_S:g} s" if slow else "")
        self.add("timing", "per call", "warn" if slow else "ok", detail)


def _with_answer(task: Task, answer: str) -> list[Message]:
    return [*task.prompt, Message(role="assistant", content=answer)]


def _verdict(result: VerifyResult) -> tuple:
    return result.reward, dict(result.components), result.error


def _field_error(err: dict) -> str:
    where = ".".join(map(str, err["loc"])) or "row"
    return f"unknown field {where!r}" if err["type"] == "extra_forbidden" else f"{where}: {err['msg']}"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, ValueError | EnvCheckInputError) else f"{type(e).__name__}: {text}"


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def format_report(report: Report) -> str:
    """One table, every finding a row, then the count of errors and warnings."""
    head = ("check", "env", "target", "status", "ms", "detail")
    rows = [(f.check, f.env, f.target, f.status, "" if f.ms is None else f"{f.ms:.1f}", f.detail)
            for f in report.findings]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)), r[5]]).rstrip()
             for r in [head, *rows]]
    errors, warnings = len(report.errors), len(report.warnings)
    verdict = "clean" if not errors and not warnings else f"{errors} error(s), {warnings} warning(s)"
    return "\n".join([*lines, f"{report.config}: {verdict}"])
