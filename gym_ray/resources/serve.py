"""Hosting an environment on Ray Serve: NeMo Gym-compatible HTTP routes and a handle client.

One generic deployment wraps any `ResourceServer` in an `EnvRuntime`. HTTP is for the edges
(NeMo Gym agents, non-Ray clients); agents inside Ray use `HandleEnvClient`, which calls the
same runtime methods through a `DeploymentHandle` (gRPC transport by default, `_by_reference=False`:
cheaper per call than Serve's default by-reference handle; see benchmarks/env_transport.py), with the
calls of one event-loop iteration coalesced into one handle call (`gym_ray.serving.batch`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from gym_ray import compat
from gym_ray.config import HOT_PATH_LOGGING, EnvConfig
from gym_ray.resources.http_compat import (
    SESSION_COOKIE,
    aggregate_metrics,
    parse_task,
    seed_request,
    session_id_from,
    session_response,
    verify_failure,
    verify_request,
)
from gym_ray.resources.isolation import EnvHungError
from gym_ray.resources.records import ToolOutput
from gym_ray.resources.runtime import EnvError, EnvRuntime, SessionLostError, cap_output, import_server
from gym_ray.serving.batch import MAX_HOMES, STICKY_ROUTER, BatchedCalls, Coalescer
from gym_ray.serving.failures import DeploymentError, failure_cause
from gym_ray.types import Message, StepResult, Task, ToolCall, ToolSpec, VerifyResult

api = FastAPI(title="gym_ray resource server")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if not raw.strip():
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024, logging_config=HOT_PATH_LOGGING)
@serve.ingress(api)
class EnvDeployment(BatchedCalls):
    """One replica: an environment instance with its sessions (stick sessions to replicas when >1)."""

    def __init__(self, name: str, cfg: dict) -> None:
        env = EnvConfig.model_validate(cfg)
        self.runtime = EnvRuntime.from_config(name, env)
        # The agent's cut, made before an answer travels: a long one would fail on the handle transport's
        # size limit, and the agent would cut it anyway.
        self.max_output_chars = env.agent.max_tool_output_chars

    def _capped(self, text: str) -> str:
        out, cut = cap_output(text, self.max_output_chars)
        return ToolOutput.of(out, cached=True) if cut and getattr(text, "cached", False) else out

    # --- handle methods (plain data in and out) -----------------------------------------------
    async def tools(self) -> list[dict]:
        return [s.model_dump() for s in await self.runtime.tools()]

    async def seed_session(self, session_id: str, task: dict) -> None:
        await self.runtime.seed_session(session_id, Task.model_validate(task))

    async def seeded(self, session_id: str, task: dict, method: str, args: tuple) -> Any:
        """Seed the session, then run its first call `method(session_id, *args)`: one hop for both."""
        await self.seed_session(session_id, task)
        return await getattr(self, method)(session_id, *args)

    async def call_tool(self, session_id: str, name: str, arguments: dict | str | None) -> str:
        return self._capped(await self.runtime.call_tool_raw(session_id, name, arguments))

    async def reset(self, session_id: str, task: dict) -> str:
        return self._capped(await self.runtime.reset(session_id, Task.model_validate(task)))

    async def step(self, session_id: str, action: str) -> dict:
        result = await self.runtime.step(session_id, action)
        return {**result.model_dump(), "observation": self._capped(result.observation)}

    async def verify(self, session_id: str, task: dict, messages: list[dict], close: bool = False) -> dict:
        """`close`: free the session in the same call (the episode's last; one hop fewer per rollout)."""
        msgs = [Message.model_validate(m) for m in messages]
        try:
            return (await self.runtime.verify(session_id, Task.model_validate(task), msgs)).model_dump()
        finally:
            if close:
                await self.runtime.close_session(session_id)

    async def fork_session(self, session_id: str, new_session_ids: list[str]) -> None:
        await self.runtime.fork_session(session_id, new_session_ids)

    async def close_session(self, session_id: str) -> None:
        await self.runtime.close_session(session_id)

    def num_sessions(self) -> int:
        return len(self.runtime.sessions)

    # --- HTTP routes (NeMo Gym-compatible) ------------------------------------------------------
    @api.get("/tools")
    async def http_tools(self) -> list[dict]:
        return [s.to_openai() for s in await self.runtime.tools()]

    @api.post("/seed_session")
    async def http_seed_session(self, request: Request):
        try:
            body = await _json_body(request)
            assigned, task = seed_request(body, self.runtime.name)
        except (ValueError, KeyError) as e:
            return _error(400, f"seed_session: bad task row: {e}")
        # A seed starts an episode: never the session of a cookie a client carried over from an earlier one
        # (NeMo Gym 0.7's collector does, and two episodes then shared one session).
        sid = assigned or session_id_from(body, request.headers, {}) or uuid.uuid4().hex
        try:
            await self.runtime.seed_session(sid, task)
        except EnvError as e:
            return _error(500, str(e))
        response = JSONResponse(session_response(body, sid))
        response.set_cookie(SESSION_COOKIE, sid, httponly=True)
        return response

    @api.post("/verify")
    async def http_verify(self, request: Request):
        try:
            body = await _json_body(request)
            echo, task, messages = verify_request(body, self.runtime.name)
        except (ValueError, KeyError) as e:
            return _error(400, f"verify: bad request body: {e}")
        sid = session_id_from(body, request.headers, request.cookies) or ""
        try:
            result = await self.runtime.verify(sid, task, messages)
        except SessionLostError as e:
            return _error(404, str(e))
        finally:  # /verify ends a NeMo Gym episode: its agents never call /close_session
            await self.runtime.close_session(sid)
        if result.error:  # never a fabricated reward: the client sees the verifier's failure
            return JSONResponse(verify_failure(result.error, result.error_kind), status_code=500)
        return {
            **echo,
            "reward": result.reward,
            "reward_components": result.components,
            "verify_info": result.info,
            "verify_error": result.error,
        }

    @api.post("/close_session")
    async def http_close_session(self, request: Request):
        try:
            body = await _json_body(request)
        except ValueError as e:
            return _error(400, f"close_session: {e}")
        sid = body.get("resources_session_id") or session_id_from(body, request.headers, request.cookies)
        if sid:
            await self.runtime.close_session(sid)
        return session_response(body, sid, closed=bool(sid))

    @api.post("/aggregate_metrics")
    async def http_aggregate_metrics(self, request: Request):
        try:
            rows = (await _json_body(request))["verify_responses"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError("must be a list of verify responses (JSON objects)")
        except (ValueError, KeyError) as e:
            return _error(400, f"aggregate_metrics: verify_responses: {e}")
        return aggregate_metrics(rows)

    @api.get("/")
    @api.get("/health")
    @api.get("/readyz")
    async def http_health(self) -> dict:
        """Liveness and readiness (NeMo Gym polls `/` while its servers start)."""
        return {"status": "ok", "env": self.runtime.name}

    @api.get("/reverify_mode")
    async def http_reverify_mode(self) -> str:
        """NeMo Gym 0.7's `ReverifyMode`: a stored response can be re-verified without its session."""
        return "unsupported" if type(self.runtime.server).is_stateful() else "stateless"

    @api.post("/reset")
    async def http_reset(self, request: Request):
        try:
            body = await _json_body(request)
            task = parse_task(body, self.runtime.name)
        except (ValueError, KeyError) as e:
            return _error(400, f"reset: bad task row: {e}")
        sid = session_id_from(body, request.headers, request.cookies) or uuid.uuid4().hex
        try:
            observation = await self.runtime.reset(sid, task)
        except EnvError as e:
            return _error(500, str(e))
        response = JSONResponse({"session_id": sid, "observation": observation})
        response.set_cookie(SESSION_COOKIE, sid, httponly=True)
        return response

    @api.post("/step")
    async def http_step(self, request: Request):
        try:
            body = await _json_body(request)
        except ValueError as e:
            return _error(400, f"step: {e}")
        sid = session_id_from(body, request.headers, request.cookies)
        if not sid or not isinstance(body.get("action"), str):
            return _error(
                400, "step: needs a session (session_id, X-Session-Id or cookie) and a string 'action'"
            )
        try:
            return (await self.runtime.step(sid, body["action"])).model_dump()
        except EnvError as e:
            return _error(404 if "no session" in str(e) else 500, str(e))

    @api.get("/{path:path}")
    async def http_unknown(self, path: str):
        return _error(404, f"no route GET /{path}")

    @api.post("/{tool_name}")
    async def http_tool(self, tool_name: str, request: Request):
        tools = type(self.runtime.server).tool_defs
        if tool_name not in tools:  # a 404, so no client reads an error text as a tool's answer
            return _error(404, f"no route or tool {tool_name!r} (tools: {', '.join(tools) or 'none'})")
        raw = (await request.body()).decode(errors="replace") or "{}"
        sid = session_id_from({}, request.headers, request.cookies) or ""
        try:
            response = PlainTextResponse(await self.runtime.call_tool_raw(sid, tool_name, raw))
            # NeMo Gym's simple_agent keeps only the cookies of the last tool response for /verify (as its
            # own servers' session middleware re-sends them on every response), so send it again
            response.set_cookie(SESSION_COOKIE, sid, httponly=True)
            return response
        except SessionLostError as e:
            return _error(404, str(e))
        except (EnvError, EnvHungError) as e:
            return _error(500, str(e))


def is_sticky(cfg: EnvConfig) -> bool:
    """More than one replica (or an autoscaler): a session's calls must all reach the one holding it."""
    return cfg.autoscaling is not None or cfg.num_replicas > 1


def env_serve_options(name: str, cfg: EnvConfig) -> dict[str, Any]:
    """The Serve options of environment `name`'s deployment: replicas or autoscaling, session affinity."""
    options: dict[str, Any] = {"name": name, "max_ongoing_requests": cfg.max_ongoing_requests}
    if cfg.autoscaling is not None:
        options["autoscaling_config"] = cfg.autoscaling.model_dump()
    else:
        options["num_replicas"] = cfg.num_replicas
    if is_sticky(cfg):
        options["request_router_config"] = {"request_router_class": STICKY_ROUTER}
    if cfg.runtime_env:
        options["ray_actor_options"] = {**EnvDeployment.ray_actor_options, "runtime_env": cfg.runtime_env}
    return options


def deploy_env(name: str, cfg: EnvConfig, *, route_prefix: str | None = None) -> str:
    """Deploy environment `name` as its own Serve app (also named `name`) on the running Ray + Serve.

    HTTP routes live under `route_prefix` (default: `cfg.route_prefix` or `/<name>`). With more than one
    replica or autoscaling, requests of one session stick to one replica (consistent hashing on the
    session id over HTTP; over handles, to the replica that answered the session's first call).
    Raises `DeploymentError` naming the env and the cause when the server cannot be imported or its
    replicas fail to start.
    """
    return deploy_envs({name: cfg}, route_prefixes={name: route_prefix} if route_prefix else None)[0]


def deploy_envs(envs: dict[str, EnvConfig], *, route_prefixes: dict[str, str] | None = None) -> list[str]:
    """`deploy_env` for several environments at once: Serve starts their replicas side by side, so a run of
    20 environments is up in the time of its slowest, not of their sum. Returns the app names; the first
    env whose replicas fail raises `DeploymentError` (its app and the others stay for the caller to delete).
    """
    if not envs:
        return []
    targets = []
    for name, cfg in envs.items():
        try:
            if not cfg.runtime_env:  # else the package may be in the replicas' runtime_env only
                import_server(cfg.server)  # fail here, with the path in the message, not inside a replica
        except ValueError as e:
            raise DeploymentError(f"envs.{name}.server: {e}") from None
        prefix = (route_prefixes or {}).get(name) or env_route(name, cfg)
        app = EnvDeployment.options(**env_serve_options(name, cfg)).bind(name, cfg.model_dump())
        targets.append(serve.RunTarget(app, name=name, route_prefix=prefix))
    try:
        serve.run_many(targets, wait_for_applications_running=False)
    except RuntimeError as e:
        raise DeploymentError(f"envs.{'/'.join(envs)}: deployment failed: {e}") from None
    _wait_running(list(envs))
    return list(envs)


def env_route(name: str, cfg: EnvConfig) -> str:
    """The HTTP route an env's app serves under unless the caller names another."""
    return cfg.route_prefix or f"/{name}"


def _wait_running(names: list[str]) -> None:
    """Return once every app of `names` runs; raise `DeploymentError` for the first one whose deploy failed."""
    waiting = set(names)
    while waiting:
        apps = serve.status().applications
        for name in sorted(waiting):
            app = apps.get(name)
            if app is None:
                raise DeploymentError(f"envs.{name}: deployment failed: its Serve app was deleted while it started")
            if app.status == "DEPLOY_FAILED":
                cause = failure_cause(name, RuntimeError(app.message))
                raise DeploymentError(f"envs.{name}: deployment failed: {cause}")
            if app.status == "RUNNING":
                waiting.discard(name)
        if waiting:
            time.sleep(0.5)


class HandleEnvClient:
    """`EnvClient` over a Serve handle; picklable (the handle is made on first use in each process).

    Calls go through a `Coalescer`: those made in the same event-loop iteration share one handle call.
    A session's seed travels with its first call (a seed failure raises `SeedError` from there), and
    `verify` frees the session (verify is an episode's last call): an episode of one tool call costs two
    env requests, and one that never reached its environment costs none.
    """

    def __init__(self, app_name: str, *, sticky: bool = False, by_reference: bool = False) -> None:
        self.app_name = app_name
        self.sticky = sticky
        self.by_reference = by_reference
        self._calls: Coalescer | None = None
        # Sessions the replica does not hold, so their close_session sends nothing: the task row of one not
        # seeded yet (it travels with the first call), or None for one that verify freed.
        self._off_replica: OrderedDict[str, dict | None] = OrderedDict()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_calls": None, "_off_replica": OrderedDict()}

    def _call(self, method: str, session_id: str | None, *args: Any) -> asyncio.Future:
        if self._calls is None:
            handle = compat.with_transport(serve.get_app_handle(self.app_name), by_reference=self.by_reference)
            self._calls = Coalescer(handle, sticky=self.sticky, by_reference=self.by_reference)
        return self._calls.call(method, *args, session_id=session_id)

    def _mark_off_replica(self, session_id: str, task: dict | None) -> None:
        self._off_replica[session_id] = task
        self._off_replica.move_to_end(session_id)
        if len(self._off_replica) > MAX_HOMES:  # the oldest never closed (a cancelled episode)
            self._off_replica.popitem(last=False)

    def _session_call(self, method: str, session_id: str, *args: Any) -> asyncio.Future:
        task = self._off_replica.pop(session_id, None)
        if task is None:
            return self._call(method, session_id, session_id, *args)
        return self._call("seeded", session_id, session_id, task, method, args)

    async def tools(self) -> list[ToolSpec]:
        return [ToolSpec.model_validate(s) for s in await self._call("tools", None)]

    async def seed_session(self, session_id: str, task: Task) -> None:
        self._mark_off_replica(session_id, task.model_dump(mode="json"))

    async def call_tool(self, session_id: str, call: ToolCall) -> str:
        return await self._session_call("call_tool", session_id, call.name, call.arguments)

    async def reset(self, session_id: str, task: Task) -> str:
        self._off_replica.pop(session_id, None)  # reset seeds
        return await self._call("reset", session_id, session_id, task.model_dump(mode="json"))

    async def step(self, session_id: str, action: str) -> StepResult:
        return StepResult.model_validate(await self._session_call("step", session_id, action))

    async def verify(self, session_id: str, task: Task, messages: list[Message]) -> VerifyResult:
        out = await self._session_call("verify", session_id, task.model_dump(mode="json"),
                                       [m.model_dump(mode="json") for m in messages], True)
        self._mark_off_replica(session_id, None)
        return VerifyResult.model_validate(out)

    async def fork_session(self, session_id: str, new_session_ids: list[str]) -> None:
        """Fork on the parent's replica (its seed goes along if not sent yet); the forks live there, and
        their calls are routed there."""
        await self._session_call("fork_session", session_id, list(new_session_ids))
        self._calls.share_home(session_id, new_session_ids)

    async def close_session(self, session_id: str) -> None:
        if session_id in self._off_replica:  # never sent to a replica, or freed there by verify
            del self._off_replica[session_id]
            if self._calls is not None:
                self._calls.forget(session_id)
            return
        try:
            await self._call("close_session", session_id, session_id)
        finally:
            self._calls.forget(session_id)
