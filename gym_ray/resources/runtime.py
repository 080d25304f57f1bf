"""The host-independent core of a resource server: sessions, dispatch, and failure handling.

`EnvRuntime` implements the `EnvClient` protocol directly over one `ResourceServer` instance; the
in-process client is a thin lazy wrapper around it and the Serve deployment calls it from its routes.
Model mistakes (unknown tool, bad arguments, a tool that raises) come back as text for the model;
environment failures (a missing session, a hook that raises) raise `EnvError` or set
`VerifyResult.error`, so the agent reports `env_error` instead of training on a wrong reward.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from gym_ray import meter
from gym_ray.config import EnvConfig
from gym_ray.errors import FailureKind
from gym_ray.resources.isolation import EnvHungError, HookThreads
from gym_ray.resources.messages import final_answer
from gym_ray.resources.records import ToolOutput
from gym_ray.resources.server import ResourceServer, Session, _current
from gym_ray.resources.sessions import SessionStore
from gym_ray.resources.tools import ToolArgumentError, json_arguments
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult

log = logging.getLogger(__name__)


class EnvError(RuntimeError):
    """The environment (not the model) failed: the episode should be reported as `env_error`."""


class SeedError(EnvError):
    """The environment failed to seed a session. A client that sends the seed with the session's first
    call raises it from that call; the row still names the seed stage."""


class SessionLostError(EnvError):
    """The episode's session is gone (its replica died, or it expired): an infrastructure failure, so the
    collector re-runs the episode with a fresh session instead of scoring what the model was shown."""


def import_server(path: str) -> type[ResourceServer]:
    """Resolve `package.module:ClassName` (the `server:` key of an environment's config)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"server {path!r}: expected an import path 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"server {path!r}: cannot import module {module_name!r}: {e}") from e
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, ResourceServer)):
        raise ValueError(f"server {path!r}: {attr!r} is not a ResourceServer subclass in {module_name}")
    return cls


def check_forkable(name: str, cfg: EnvConfig) -> None:
    """Tree rollouts fork episodes: refuse, in one line, an environment whose episodes' state gym_ray does
    not own. A server importable only in its replicas' `runtime_env` is asked at its first fork instead."""
    if cfg.runtime_env:
        return
    refusal = import_server(cfg.server).fork_refusal
    if refusal:
        raise ValueError(f"envs.{name}: collect.tree needs forkable episodes, and {cfg.server} cannot fork: {refusal}")


TRUNCATION_NOTE = "\n[gym_ray: output truncated to {kept} of {total} characters]"
_CUT = re.compile(r"\n\[gym_ray: output truncated to (\d+) of \d+ characters\]")


def cap_output(text: str, cap: int) -> tuple[str, bool]:
    """`text` cut to `cap` characters with a note telling the model so, and whether it was cut. The Serve
    env replica cuts before the answer travels (a long one would exceed the transport's limit) and the
    agent again: text already cut to `cap` stays as it is, and counts as cut."""
    if len(text) <= cap:
        return text, False
    done = _CUT.fullmatch(text, cap)
    if done is not None and int(done[1]) == cap:
        return text, True
    return text[:cap] + TRUNCATION_NOTE.format(kept=cap, total=len(text)), True


def _tool_output(result: Any) -> str:
    if isinstance(result, str):
        return result
    if result is None:
        return ""
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return json.dumps(result, default=str)


def _as_verify_result(out: Any) -> VerifyResult:
    if isinstance(out, VerifyResult):
        result = out
    elif isinstance(out, bool | int | float):
        result = VerifyResult(reward=float(out))
    else:
        return VerifyResult(error=f"verify returned {type(out).__name__}; expected a float or a VerifyResult",
                            error_kind=FailureKind.BAD_OUTPUT)
    if not math.isfinite(result.reward):
        return VerifyResult(error=f"verify returned a non-finite reward {result.reward}",
                            error_kind=FailureKind.BAD_OUTPUT)
    return result


class ToolCache:
    """Results of `@tool(cacheable=True)` calls by (tool, arguments), least recently used dropped beyond
    `size`: one per runtime (a server replica, or an in-process client), shared by its episodes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self._results: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            out = self._results.get(key)
            if out is not None:
                self._results.move_to_end(key)
                self.hits += 1
            return out

    def put(self, key: tuple[str, str], result: str) -> None:
        with self._lock:
            self._results[key] = result
            self._results.move_to_end(key)
            while len(self._results) > self.size:
                self._results.popitem(last=False)


def _cache_key(name: str, kwargs: dict[str, Any]) -> tuple[str, str]:
    def plain(v: Any) -> Any:
        return v.model_dump(mode="json") if isinstance(v, BaseModel) else str(v)

    return name, json.dumps(kwargs, sort_keys=True, default=plain)


async def _inline(fn: Callable) -> Any:
    """A hook run on the caller's loop (sync or async), as one coroutine for the meter."""
    result = fn()
    return await result if inspect.isawaitable(result) else result


class EnvRuntime:
    """One environment instance and its sessions; every method is safe to call concurrently."""

    def __init__(self, server: ResourceServer, name: str | None = None) -> None:
        cls = type(server)
        self.server = server
        self.name = name or cls.__name__
        self.sessions = SessionStore(cls.session_ttl_s, cls.max_sessions)
        self._tool_defs = cls.tool_defs
        self._specs = [td.spec for td in self._tool_defs.values()]
        self._step_driven = cls.reset is not ResourceServer.reset
        self._forwards_tools = cls.forwards_tools()
        self._default_verify = cls.verify is ResourceServer.verify
        self._scores_answer = self._default_verify and cls.score is not ResourceServer.score
        self.threads = HookThreads(self.name)
        cacheable = any(td.cacheable for td in self._tool_defs.values())
        self.tool_cache = ToolCache(cls.tool_cache_size) if cacheable and cls.tool_cache_size > 0 else None

    @classmethod
    def from_config(cls, name: str, cfg: EnvConfig) -> EnvRuntime:
        server_cls = import_server(cfg.server)
        try:
            server = server_cls(**cfg.config)
        except TypeError as e:
            raise ValueError(f"envs.{name}.config: {server_cls.__name__} rejected its settings: {e}") from e
        return cls(server, name)

    async def _call(self, session: Session, fn: Callable, *, thread: bool = False, cost: str = "env_cpu_s") -> Any:
        """Run a hook with `session` bound (threads get a copy of the context, so it is bound there too); its
        CPU, and its sandbox runs, are added to the session's cost record under `cost`."""
        record = session.data.setdefault("cost", {})
        token, usage = _current.set(session), meter.sandbox_usage.set(record)
        try:
            if thread:
                return await self.threads.run(meter.thread_cpu(fn, record, cost))
            return await meter.Metered(_inline(fn), record, cost)
        finally:
            meter.sandbox_usage.reset(usage)
            _current.reset(token)

    async def _release(self, sessions: list[Session]) -> None:
        for session in sessions:
            try:
                await self._call(session, self.server.close)
            except Exception:
                log.exception("%s: close() failed for session %s", self.name, session.id)

    def _missing(self, session_id: str) -> str:
        return (
            f"no session {session_id!r} in environment {self.name!r} "
            f"(never seeded, closed, or expired after {self.sessions.ttl_s:.0f} s idle)"
        )

    # --- EnvClient ---------------------------------------------------------------------------
    async def tools(self) -> list[ToolSpec]:
        if not self._forwards_tools:
            return list(self._specs)
        try:
            extra = self.server.forwarded_tools()
            extra = await extra if inspect.isawaitable(extra) else extra
        except Exception as e:
            raise EnvError(f"{self.name}: listing its forwarded tools failed: {type(e).__name__}: {e}") from e
        return [*self._specs, *extra]

    async def seed_session(self, session_id: str, task: Task) -> None:
        await self._release(self.sessions.expire())
        session = Session(id=session_id, task=task)
        try:
            session.state = await self._call(session, functools.partial(self.server.seed, task))
        except Exception as e:
            raise SeedError(
                f"{self.name}: seed failed for task {task.task_id}: {type(e).__name__}: {e}"
            ) from e
        replaced = self.sessions.put(session)
        if replaced is not None:
            await self._release([replaced])

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        return await self.call_tool_raw(session_id, call.name, call.arguments)

    async def call_tool_raw(self, session_id: str, name: str, arguments: dict[str, Any] | str | None) -> str:
        """Like `call_tool`, with arguments as the model wrote them (a JSON string is accepted). A cacheable
        tool's repeated call is answered from the cache as a `ToolOutput` whose `cached` is true."""
        td = self._tool_defs.get(name)
        if td is None and not self._forwards_tools:
            available = ", ".join(self._tool_defs) or "none"
            return f"Error: unknown tool {name!r}. Available tools: {available}."
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionLostError(self._missing(session_id))
        key = None
        try:
            if td is None:
                fn = functools.partial(self.server.forward_tool, name, json_arguments(arguments))
            else:
                kwargs = td.parse_arguments(arguments)
                fn = functools.partial(td.fn, self.server, **kwargs)
                if td.cacheable and self.tool_cache is not None:
                    key = _cache_key(name, kwargs)
        except ToolArgumentError as e:
            return f"Error: invalid arguments for {name}: {e}"
        if key is not None and (hit := self.tool_cache.get(key)) is not None:
            return ToolOutput.of(hit, cached=True)
        try:
            out = _tool_output(await self._call(session, fn, thread=td is not None and td.blocking,
                                                cost="tool_cpu_s"))
            if key is not None:
                self.tool_cache.put(key, out)
            return out
        except (EnvHungError, EnvError):
            raise  # the environment, not the model, is broken: an env_error, never text for the model
        except Exception as e:
            log.debug("%s: tool %s raised", self.name, name, exc_info=True)
            return f"Error: {name} failed: {type(e).__name__}: {e}"

    async def reset(self, session_id: str, task: Task) -> str:
        await self.seed_session(session_id, task)
        session = self.sessions.get(session_id)
        assert session is not None
        session.data.update(rewards=[], done=False)
        try:
            observation = await self._call(session, functools.partial(self.server.reset, task))
        except Exception as e:
            raise EnvError(
                f"{self.name}: reset failed for task {task.task_id}: {type(e).__name__}: {e}"
            ) from e
        if not isinstance(observation, str):
            raise EnvError(f"{self.name}: reset returned {type(observation).__name__}; expected str")
        return observation

    async def step(self, session_id: str, action: str) -> StepResult:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionLostError(self._missing(session_id))
        if session.data.get("done"):
            raise EnvError(f"{self.name}: step after the episode ended (session {session_id!r})")
        try:
            result = await self._call(session, functools.partial(self.server.step, action))
        except Exception as e:
            raise EnvError(f"{self.name}: step failed: {type(e).__name__}: {e}") from e
        if not isinstance(result, StepResult):
            raise EnvError(f"{self.name}: step returned {type(result).__name__}; expected StepResult")
        session.data.setdefault("rewards", []).append(result.reward)
        session.data.update(done=result.done, info=result.info)
        return result

    async def verify(self, session_id: str, task: Task, messages: list[Message]) -> VerifyResult:
        session = self.sessions.get(session_id)
        if session is None:
            if type(self.server).is_stateful():
                raise SessionLostError(self._missing(session_id))
            session = Session(id=session_id, task=task, state={})  # stateless: verify needs no episode
        if self._default_verify and self._step_driven:
            rewards = session.data.get("rewards", [])
            info = {
                **session.data.get("info", {}),
                "steps": len(rewards),
                "done": bool(session.data.get("done")),
            }
            return VerifyResult(reward=float(sum(rewards)), info=info,
                                cost=dict(session.data.get("cost", {})))
        if self._scores_answer:
            answer = final_answer(messages)
            if answer is None:
                return VerifyResult(reward=0.0, info={"reason": "no final answer"})
            fn, arg = self.server.score, answer
        else:
            fn, arg = self.server.verify, messages
        try:
            out = await self._call(session, functools.partial(fn, task, arg),
                                   thread=not inspect.iscoroutinefunction(fn), cost="verify_cpu_s")
        except EnvHungError as e:
            return VerifyResult(error=str(e), error_kind=FailureKind.HUNG)
        except Exception as e:
            log.debug("%s: verify raised", self.name, exc_info=True)
            return VerifyResult(error=f"{self.name}: verify failed: {type(e).__name__}: {e}")
        # the environment's side of the episode's cost goes back with the answer
        return _as_verify_result(out).model_copy(update={"cost": dict(session.data.get("cost", {}))})

    async def fork_session(self, session_id: str, new_session_ids: list[str]) -> None:
        """Copy session `session_id` into new sessions `new_session_ids` (each with its own state, forked by
        the server's `fork`, and its own step record); the parent goes on unchanged."""
        refusal = type(self.server).fork_refusal
        if refusal:
            raise EnvError(f"{self.name}: its episodes cannot be forked: {refusal}")
        await self._release(self.sessions.expire())
        parent = self.sessions.get(session_id)
        if parent is None:
            raise SessionLostError(self._missing(session_id))
        children: list[Session] = []
        try:
            for sid in new_session_ids:
                state = await self._call(parent, functools.partial(self.server.fork, parent.state))
                children.append(Session(id=sid, task=parent.task, state=state, data=copy.deepcopy(parent.data)))
        except Exception as e:
            await self._release(children)
            raise EnvError(f"{self.name}: fork of session {session_id!r} failed: {type(e).__name__}: {e}") from e
        for child in children:
            replaced = self.sessions.put(child)
            if replaced is not None:
                await self._release([replaced])

    async def close_session(self, session_id: str) -> None:
        session = self.sessions.pop(session_id)
        if session is not None:
            await self._release([session])
