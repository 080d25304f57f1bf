"""OpenEnv environment servers (openenv-core 0.3) as gym_ray step environments.

OpenEnv's HTTP `/reset` and `/step` routes make a fresh environment per request, so an episode is one of
its persistent sessions: the server's `/ws` WebSocket, through openenv-core's own `GenericEnvClient`
(no env-specific client package needed). `reset` opens the session and sends `reset(seed, episode_id,
**reset_kwargs)`, `step` sends the action; each step's reward is kept (the env-step agent's
`turn_rewards`, the episode reward their sum) and the observation's `done` ends the episode.

Actions: the model's text fills the Action's one string field (`action_field`, else the only string field
of the server's `/schema` action schema besides `metadata`, e.g. `message` for an echo env); an Action
with none or several string fields takes the text as a JSON object of its fields. The server builds its
Action type from that (pydantic); text it rejects ends the episode with reward 0 and an `info.reason`
(the model's mistake). Observations: `observation_field`'s value, a one-field observation's value, else
the observation's fields as JSON (OpenEnv sends reward/done apart, and not the metadata).

Config (`envs.<name>.config`): `url` (a running server, http(s):// or ws(s)://), or `env` (an OpenEnv
`Environment` class path, `module:Class`) to serve one in-process per env instance (replica / agent
actor) with OpenEnv's `create_app` on a free local port, its Action/Observation types from the class's
generic parameters or `action` / `observation`; `max_concurrent_envs` (default 256 when the class sets
`SUPPORTS_CONCURRENT_SESSIONS`, else 1). Also `action_field`, `observation_field`, `reset_kwargs`
(a task's `verifier_metadata.reset_kwargs` adds to them), `timeout_s`. A server that cannot be reached
or fails is an `EnvError` (env_error), never a reward.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import typing
from typing import Any

from gym_ray.importer import import_object
from gym_ray.integrations.gymnasium import BadAction, jsonable, malformed_action
from gym_ray.integrations.mcp import on_mcp_loop as _on_client_loop  # one loop thread per process
from gym_ray.resources.runtime import EnvError
from gym_ray.resources.server import ResourceServer
from gym_ray.types import StepResult, Task

_SCHEMES = ("http://", "https://", "ws://", "wss://")


def _types_of(env_cls: type) -> tuple[Any, Any]:
    """An Environment's (Action, Observation) types: `Environment[A, O, S]` bases, else `step`'s hints."""
    for base in getattr(env_cls, "__orig_bases__", ()):
        args = typing.get_args(base)
        if len(args) >= 2 and all(isinstance(a, type) for a in args[:2]):
            return args[0], args[1]
    try:
        hints = typing.get_type_hints(env_cls.step)
    except Exception:  # noqa: BLE001 - unresolvable hints: the caller asks for config.action
        return None, None
    return hints.get("action"), hints.get("return")


class _Server:
    """An OpenEnv `create_app` server on a free 127.0.0.1 port, in a daemon thread of this process."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="gym_ray-openenv", daemon=True)
        self.thread.start()
        for _ in range(int(timeout_s * 20)):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not self.server.started:
            raise EnvError(f"OpenEnv server did not start on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class OpenEnvEnv(ResourceServer):
    """One OpenEnv WebSocket session per episode."""

    fork_refusal = "the episode's state lives in the OpenEnv server's session, which has no fork"

    def __init__(self, url: str | None = None, env: str | None = None, action: str | None = None,
                 observation: str | None = None, max_concurrent_envs: int | None = None,
                 action_field: str | None = None, observation_field: str | None = None,
                 reset_kwargs: dict[str, Any] | None = None, timeout_s: float = 60.0) -> None:
        if (url is None) == (env is None):
            raise ValueError("config: OpenEnvEnv needs exactly one of config.url (a running OpenEnv server) "
                             "or config.env (an OpenEnv Environment class, 'module:Class')")
        if url is not None and not url.startswith(_SCHEMES):
            raise ValueError(f"config.url: {url!r} is not an http(s):// or ws(s):// URL of an OpenEnv server")
        self._app_args: tuple | None = None
        if env is not None:
            self._app_args = self._resolve(env, action, observation, max_concurrent_envs)
        self.url = url.rstrip("/") if url else None
        self.action_field = action_field
        self.observation_field = observation_field
        self.reset_kwargs = dict(reset_kwargs or {})
        self.timeout_s = float(timeout_s)
        self._server: _Server | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _resolve(env: str, action: str | None, observation: str | None, max_envs: int | None) -> tuple:
        from openenv.core.env_server import Action, Environment, Observation

        def load(option: str, path: str, base: type) -> type:
            try:
                obj = import_object(path)
            except ImportError as e:
                raise ValueError(f"config.{option}: {e}") from e
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise ValueError(f"config.{option}: {path!r} is not an OpenEnv {base.__name__} subclass")
            return obj

        env_cls = load("env", env, Environment)
        act, obs = _types_of(env_cls)
        act_cls = load("action", action, Action) if action else act
        obs_cls = load("observation", observation, Observation) if observation else obs
        for option, cls, base in (("action", act_cls, Action), ("observation", obs_cls, Observation)):
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise ValueError(f"config.{option}: {env_cls.__name__}'s {base.__name__} type is not declared "
                                 f"(Environment[Action, Observation, State]); name it as 'module:Class'")
        if max_envs is None:
            max_envs = 256 if env_cls.SUPPORTS_CONCURRENT_SESSIONS else 1
        return env_cls, act_cls, obs_cls, max_envs

    # --- where the server is --------------------------------------------------------------------
    def _start(self) -> str:
        with self._lock:
            if self._server is None:
                from openenv.core.env_server import create_app

                env_cls, act_cls, obs_cls, max_envs = self._app_args
                app = create_app(env_cls, act_cls, obs_cls, max_concurrent_envs=max_envs)
                self._server = _Server(app, self.timeout_s)
            return self._server.url

    async def _base_url(self) -> str:
        return self.url or await asyncio.to_thread(self._start)

    async def _action_field(self, base_url: str) -> str | None:
        """The Action's one string field, from the server's `/schema` (fetched once)."""
        if self.action_field is None:
            import httpx

            http = base_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                    schema = (await client.get(f"{http}/schema")).raise_for_status().json()["action"]
            except Exception as e:
                raise EnvError(f"OpenEnv server {http}: cannot read /schema: {type(e).__name__}: {e}") from e
            strings = [k for k, v in schema.get("properties", {}).items()
                       if k != "metadata" and v.get("type") == "string"]
            self.action_field = strings[0] if len(strings) == 1 else ""
        return self.action_field or None

    # --- hooks for other envs -----------------------------------------------------------------
    def action(self, field: str | None, text: str) -> dict[str, Any]:
        if field:
            return {field: text.strip()}
        start, end = text.find("{"), text.rfind("}")
        try:
            value = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError as e:
            raise BadAction(f"the action is not a JSON object: {e}") from e
        if not isinstance(value, dict):
            raise BadAction(f"no JSON object of the action's fields in {text[-80:]!r}")
        return value

    def observation_text(self, observation: dict[str, Any]) -> str:
        if self.observation_field is not None:
            value = observation.get(self.observation_field)
        elif len(observation) == 1:
            value = next(iter(observation.values()))
        else:
            value = observation
        return value if isinstance(value, str) else json.dumps(jsonable(value))

    # --- the step protocol ---------------------------------------------------------------------
    async def reset(self, task: Task) -> str:
        from openenv.core import GenericEnvClient

        base_url = await self._base_url()
        field = await self._action_field(base_url)
        kwargs = {**self.reset_kwargs, **task.verifier_metadata.get("reset_kwargs", {}),
                  "episode_id": self.session_id}
        if task.verifier_metadata.get("seed") is not None:
            kwargs["seed"] = int(task.verifier_metadata["seed"])
        client = GenericEnvClient(base_url=base_url, connect_timeout_s=self.timeout_s,
                                  message_timeout_s=self.timeout_s)
        self.state = {"client": client, "field": field}
        result = await _on_client_loop(client.reset(**kwargs))
        return self.observation_text(result.observation)

    async def step(self, action: str) -> StepResult:
        client = self.state["client"]
        try:
            payload = self.action(self.state["field"], action)
            try:
                result = await _on_client_loop(client.step(payload))
            except RuntimeError as e:  # the client's form of the server's error reply
                if "code: VALIDATION_ERROR" not in str(e):
                    raise
                raise BadAction(f"the server rejected the action {payload}: {e}") from e
        except BadAction as e:
            await self.close()
            return malformed_action(e)
        if result.done:
            await self.close()
        return StepResult(observation=self.observation_text(result.observation),
                          reward=float(result.reward or 0.0), done=bool(result.done),
                          info={} if result.reward is not None else {"reward": None})

    async def close(self) -> None:
        client = (self.state or {}).get("client")
        if client is not None:
            self.state["client"] = None
            await _on_client_loop(client.close())

    def shutdown(self) -> None:
        """Stop the server this env started (if any); it is a daemon thread, so a process exit stops it too."""
        if self._server is not None:
            self._server.stop()
            self._server = None
