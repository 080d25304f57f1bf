"""An agent kind for programs gym_ray did not write: they talk to the episode's OpenAI gateway.

```yaml
agent:
  cls: gym_ray.gateway.agent:ExternalAgent
  kwargs:
    program: mypkg.agents:run        # async def run(base_url, model, task) -> str | None (a plain
    #                                  def runs in a worker thread)
    # or: command: "python my_agent.py"   (a list or a string; OPENAI_BASE_URL / OPENAI_API_KEY point
    #     at the gateway, GYM_RAY_TASK holds the task as JSON, also on stdin; of the actor's environment
    #     it gets PATH, HOME, the locale and the Python environment only; add more with `env:`)
    # sandbox: true                  # the command runs in gym_ray's bubblewrap sandbox; only the
    #                                  gateway is reachable (through a Unix socket and a forwarder)
    timeout_s: 120                   # the program's time; past it the row says `timeout`
```

The episode: seed the env session, open a gateway session bound to the program (only its processes may
call it: 403 for any other), run the program, close the gateway session the moment it ends (later calls
answer 410; a command's whole process group is killed), then the env's `verify` scores the conversation the gateway recorded (the last
call's messages and the reply). The env's tools are offered over HTTP at `<base_url minus /v1>/tools`
(`GYM_RAY_TOOLS_URL` for commands; a callable with a `tools_url` parameter gets it): plain HTTP because
any program can call it, and it is the resource servers' own surface (`POST /<tool>`). The tools run in the
episode's env session, so stateful environments verify what the program did.

Failures are rows, never a reward of 0: a program that raises or exits non-zero → `aborted`
(stage `agent`, kind `exception`); one that runs past `timeout_s` → `timeout`; one that never calls the
model → `aborted` (kind `bad_output`); a failing policy call → `model_error`, as for gym_ray's agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shlex
import traceback
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from gym_ray.agents.base import AgentOptions, EpisodeContext, agent_options
from gym_ray.agents.episode import Episode, failed
from gym_ray.config import AgentConfig
from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.gateway.server import UDS_NAME, get_gateway
from gym_ray.gateway.session import MAX_REQUEST_BYTES, GatewaySession
from gym_ray.sandbox import Sandbox
from gym_ray.sandbox.process import spawn
from gym_ray.types import Rollout, Task

_TAIL = 2000  # characters of a program's output / traceback kept in the row
_KEPT_BYTES = 64 * 1024  # of a command's stdout / stderr, read while it runs
_DRAIN_S = 1.0  # after the group is killed, how long its pipes may take to reach EOF
_PASSED_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
                         "VIRTUAL_ENV", "PYTHONPATH"})
SANDBOX_PORT = 8000  # the forwarder's port on the sandbox's private loopback
SANDBOX_MOUNT = "/run/gym_ray"  # where the gateway's socket directory appears in the sandbox
_FORWARDER = ".gym_ray_forward.py"
_FORWARD_CODE = (Path(__file__).parent / "forward.py").read_bytes()


class ProgramTimeout(Exception):
    pass


class ProgramFailed(Exception):
    pass


def tools_url(base_url: str) -> str:
    """Where the episode's environment tools are served, given the gateway base URL."""
    return base_url.removesuffix("/v1") + "/tools"


class ExternalOptions(AgentOptions):
    """`agent.kwargs` of `ExternalAgent` (see the module docstring)."""

    program: Any = None  # module:function, or the callable itself
    command: str | list[str] | None = None
    sandbox: bool = False
    timeout_s: float = Field(120.0, gt=0)
    model_name: str | None = None
    api_key: str = "gym-ray"
    env: dict[str, Any] = Field(default_factory=dict)  # more environment variables for a command
    files: dict[str, str] = Field(default_factory=dict)  # copied into the sandbox's /work: {relative: host path}
    sandbox_limits: dict[str, Any] = Field(default_factory=dict)
    sandbox_concurrency: int = Field(4, gt=0)
    sandbox_python: str = "/usr/bin/python3"
    max_request_bytes: int = Field(MAX_REQUEST_BYTES, gt=0)  # the largest request body the gateway takes

    @model_validator(mode="after")
    def _one_program(self) -> ExternalOptions:
        if bool(self.program) == bool(self.command):
            raise ValueError("set exactly one of agent.kwargs.program (module:function) or agent.kwargs.command")
        if self.sandbox and not self.command:
            raise ValueError("sandbox: true needs a command (a callable runs in-process)")
        return self


class ExternalAgent:
    Options = ExternalOptions

    def __init__(self, config: AgentConfig):
        kw = agent_options(ExternalAgent, config.kwargs)
        self.config = config
        program, command = kw.program, kw.command
        self.program: Any = None
        if program:
            from gym_ray.importer import import_object

            self.program = import_object(program) if isinstance(program, str) else program
            if not callable(self.program):
                raise ValueError(f"ExternalAgent: program {program!r} is not callable")
        self.command: list[str] | None = shlex.split(command) if isinstance(command, str) else (
            list(command) if command else None)
        self.sandbox = kw.sandbox
        self.timeout_s = kw.timeout_s
        self.model_name = kw.model_name
        self.api_key = kw.api_key
        self.extra_env = {str(k): str(v) for k, v in kw.env.items()}
        self.files = {str(k): Path(v).read_bytes() for k, v in kw.files.items()}
        self._sandbox = self._make_sandbox(kw) if self.sandbox else None  # fails here if bwrap cannot run

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]:
        ep = Episode(task, ctx)
        seeded = await ep.env_call("seed_session", ctx.env.seed_session(ctx.session_id, task), FailureStage.SEED)
        if not failed(seeded):
            session = await self._play(ep, task, ctx)
            if session.infra_error is not None:
                raise session.infra_error  # the collector retries with a fresh session
        if ep.transcript is None:  # nothing was generated: the row keeps no tokens but says why
            ep.start([])
        if ep.status == Status.OK:
            await ep.verify()
        await ep.close()
        return ep.rows()

    async def _play(self, ep: Episode, task: Task, ctx: EpisodeContext) -> GatewaySession:
        gw = await get_gateway()
        model = self.model_name or ctx.policy.model_name or "policy"
        session = gw.open(ep, model)
        base_url = gw.base_url(session)
        ep.at(FailureStage.AGENT)
        try:
            output = await self._run_program(base_url, model, task, session, gw)
        except ProgramTimeout as e:
            ep.fail(Status.TIMEOUT, str(e), Failure(stage=FailureStage.AGENT, kind=FailureKind.TIMEOUT))
            return session
        except ProgramFailed as e:
            if session.last_refused and ep.status == Status.OK:
                # it failed on our context-limit refusal: the episode hit its token budget, as a gym_ray
                # agent does (truncated, scored), not an agent bug
                ep.info["program_error"] = str(e)[-_TAIL:]
                ep.stop(ep._limit_name, truncated=True)
            else:
                ep.fail(Status.ABORTED, str(e), Failure(stage=FailureStage.AGENT, kind=FailureKind.EXCEPTION))
            return session
        finally:
            gw.close(session, "the agent program finished")
            ep.info["gateway"] = {"requests": session.requests, "calls": session.calls,
                                  "context_refusals": session.context_refusals,
                                  "tool_calls_served": session.tool_calls_served}
        if output is not None:
            ep.info["program_output"] = str(output)[-_TAIL:]
        if ep.status == Status.OK and session.calls == 0:
            ep.fail(Status.ABORTED, "the agent program finished without calling the model",
                    Failure(stage=FailureStage.AGENT, kind=FailureKind.BAD_OUTPUT))
        elif session.last_refused:  # the program gave up when its prompt no longer fit
            ep.stop(ep._limit_name, truncated=True)
        elif ep.info.get("last_finish_reason") == "length":
            ep.stop("max_tokens", truncated=True)
        return session

    async def _run_program(self, base_url: str, model: str, task: Task, session: GatewaySession, gw) -> Any:
        if self.program is not None:
            kwargs = {}
            with contextlib.suppress(TypeError, ValueError):
                if "tools_url" in inspect.signature(self.program).parameters:
                    kwargs["tools_url"] = tools_url(base_url)
            if inspect.iscoroutinefunction(self.program):
                run = self.program(base_url, model, task, **kwargs)
            else:  # a synchronous agent (e.g. smolagents) must not block the actor's event loop; past the
                # timeout its thread runs on, but the session is closed: its calls get 410
                run = asyncio.to_thread(self.program, base_url, model, task, **kwargs)
            try:
                async with asyncio.timeout(self.timeout_s) as cm:
                    return await run
            except TimeoutError:
                if cm.expired():
                    raise ProgramTimeout(f"agent program ran past timeout_s={self.timeout_s:g}") from None
                raise ProgramFailed(_exc_text()) from None
            except asyncio.CancelledError:
                raise
            except Exception:
                raise ProgramFailed(_exc_text()) from None
        env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": self.api_key, "OPENAI_MODEL": model,
               "GYM_RAY_TOOLS_URL": tools_url(base_url), "GYM_RAY_TASK": task.model_dump_json(),
               **self.extra_env}
        if self.sandbox:
            return await self._run_sandboxed(env, task, session, gw)
        return await self._run_subprocess(env, task, session, gw)

    async def _run_subprocess(self, env: dict[str, str], task: Task, session: GatewaySession, gw) -> str:
        """The command as a child of the actor, with the minimal environment and no descriptor of ours; its
        session answers only its process tree. When it exits (or times out), the session closes first (any
        later call answers 410), then its whole process group is killed and our ends of its pipes closed."""
        env = {**_passed_env(), **env}
        child = await spawn(self.command, env=env, on_start=lambda pid: gw.bind(session, pid))
        out, err = bytearray(), bytearray()
        pumps = [asyncio.ensure_future(_keep_tail(child.stdout, out)),
                 asyncio.ensure_future(_keep_tail(child.stderr, err))]
        child.feed(task.model_dump_json().encode())
        try:
            code = await asyncio.wait_for(child.wait(), self.timeout_s)
        except TimeoutError:
            raise ProgramTimeout(f"agent command ran past timeout_s={self.timeout_s:g}") from None
        finally:  # also on cancellation
            gw.close(session, "the agent program finished")
            child.kill_group()
            # EOF follows at once unless a process that left the group holds the pipes: it is not waited for
            await asyncio.wait(pumps, timeout=_DRAIN_S)
            for t in pumps:
                t.cancel()
            child.close()
            with contextlib.suppress(Exception):
                await child.wait()
        if code != 0:
            raise ProgramFailed(f"agent command exited with {code}: {err.decode(errors='replace')[-_TAIL:]}")
        return out.decode(errors="replace")

    def _make_sandbox(self, kw: ExternalOptions) -> Any:
        from gym_ray.sandbox import SandboxLimits

        limits = {"wall_time_s": self.timeout_s, "cpu_time_s": int(self.timeout_s) + 1, "memory_mb": 2048,
                  "total_memory_mb": 2048, "max_processes": 64, **kw.sandbox_limits}
        return Sandbox(SandboxLimits(**limits), max_concurrency=kw.sandbox_concurrency, python=kw.sandbox_python)

    async def _run_sandboxed(self, env: dict[str, str], task: Task, session: GatewaySession, gw) -> str:
        """The command in bubblewrap (no network but a private loopback), with the gateway's socket
        directory bound in and a forwarder on the sandbox's loopback: the gateway is all it can reach."""
        from gym_ray.sandbox import SandboxStatus

        local = f"http://127.0.0.1:{SANDBOX_PORT}"
        env = {k: v.replace(f"http://{gw.host}:{gw.port}", local) for k, v in env.items()}
        sb = self._sandbox
        command = [sb.python, f"/work/{_FORWARDER}", str(SANDBOX_PORT), f"{SANDBOX_MOUNT}/{UDS_NAME}", "--",
                   *self.command]
        result = await sb.run(command, stdin=task.model_dump_json(), env=env,
                              files={**self.files, _FORWARDER: _FORWARD_CODE}, ro_binds={gw.uds_dir: SANDBOX_MOUNT},
                              on_start=lambda pid: gw.bind(session, pid))
        if result.status == SandboxStatus.TIMEOUT:
            raise ProgramTimeout(f"agent command ran past timeout_s={self.timeout_s:g} (sandbox)")
        if result.status != SandboxStatus.OK:
            raise ProgramFailed(f"agent command in the sandbox: {result.status.value}"
                                f"{f' ({result.limit})' if result.limit else ''}, exit {result.exit_code}"
                                f"{f', {result.signal}' if result.signal else ''}: {result.stderr[-_TAIL:]}")
        return result.stdout


def _passed_env() -> dict[str, str]:
    """What an unsandboxed command gets of the actor's environment: where programs and the user's files
    are, the locale, the Python environment; never the rest (credentials, Ray's settings)."""
    return {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}


async def _keep_tail(stream: asyncio.StreamReader, buf: bytearray) -> None:
    """Read to EOF keeping the last `_KEPT_BYTES` (a program that floods its output costs no memory)."""
    while chunk := await stream.read(65536):
        buf += chunk
        del buf[:-_KEPT_BYTES]


def _exc_text() -> str:
    return "agent program raised: " + "".join(traceback.format_exc(limit=-3))[-_TAIL:]
