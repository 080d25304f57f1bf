"""A NeMo Gym resources server as a gym_ray environment: NeMo Gym's catalogue, driven by gym_ray's agents.

The env holds no logic of its own. Per episode it speaks NeMo Gym's agent protocol (what NeMo Gym's
simple_agent does) to the resources server: `POST /seed_session` with the task row, `POST /<tool>` with the
model's arguments, `POST /verify` with the row plus the episode as a Responses-API `response`, and the
server's session cookie carried on every call. The tools the model is offered are the row's
(`responses_create_params.tools`, imported into `Task.tools`). gym_ray's agent, tokenizer and transcript
do the rest, so the rows are token-exact like any other env's.

Failures keep their owner: a tool the server rejects (HTTP 4xx, e.g. arguments that fail its pydantic
model) is text for the model, as NeMo Gym's agents pass it on; an unreachable server or a 5xx from
`/seed_session` or a tool is an `EnvError` (env_error); a verifier that fails, or answers
`mask_sample: true`, is a verify error, never a reward.

Config (`envs.<name>.config`): `url` (the resources server), or `head_server` (NeMo Gym's head server URL,
as `ng_run` prints it) plus `server` (the server instance's name in NeMo Gym's config).
"""

from __future__ import annotations

import asyncio
import json
import math
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import yaml

from gym_ray.integrations.nemo_gym.responses import create_params, output_items, response_object
from gym_ray.resources.runtime import EnvError
from gym_ray.resources.server import ResourceServer
from gym_ray.types import Message, Task, VerifyResult

# Fields of NeMo Gym's verify response that are the request echoed back or the failure contract.
_NOT_INFO = {"responses_create_params", "response", "reward", "reward_components", "mask_sample",
             "failure_kind", "failure_reason"}


class BridgeConfigError(ValueError):
    """The bridge's config is unusable; the message names the option."""


def task_row(task: Task) -> dict:
    """The NeMo Gym row a task came from: its verifier fields at the top, its prompt and tools as
    `responses_create_params` (what NeMo Gym's `BaseRunRequest` subclasses validate)."""
    return {**task.verifier_metadata, "responses_create_params": create_params(task)}


def resolve_url(head_server: str, server: str) -> str:
    """A server instance's URL from NeMo Gym's head server (its `/global_config_dict_yaml`)."""
    config = yaml.safe_load(httpx.get(f"{head_server.rstrip('/')}/global_config_dict_yaml", timeout=30).json())
    block = config.get(server) if isinstance(config, dict) else None
    if not isinstance(block, dict) or "resources_servers" not in block:
        names = sorted(k for k, v in (config or {}).items() if isinstance(v, dict) and "resources_servers" in v)
        raise BridgeConfigError(f"config.server: {server!r} is not a resources server of {head_server} "
                                f"(it has {', '.join(names) or 'none'})")
    (instance,) = block["resources_servers"].values()
    return f"http://{instance['host']}:{instance['port']}"


def _cookies(jar: dict[str, str], answer: httpx.Response) -> dict[str, str]:
    """NeMo Gym's session middleware re-sends its cookie on every answer; keep the newest."""
    return {**jar, **dict(answer.cookies)}


class NemoGymResources(ResourceServer):
    """One NeMo Gym resources server; each episode's state is its session cookies."""

    fork_refusal = "the episode's state lives in the NeMo Gym resources server, which has no fork"

    def __init__(self, url: str | None = None, head_server: str | None = None, server: str | None = None,
                 timeout_s: float = 300.0) -> None:
        if bool(url) == bool(head_server):
            raise BridgeConfigError("config: give either url (the resources server) or head_server + server")
        if head_server and not server:
            raise BridgeConfigError("config.server: missing (the resources server's name in NeMo Gym's config)")
        self._url = url.rstrip("/") if url else None
        self._head = (head_server, server)
        self._timeout = timeout_s
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def _http(self) -> tuple[httpx.AsyncClient, str]:
        async with self._lock:  # one client per instance, made in the loop that uses it
            if self._url is None:
                self._url = await asyncio.to_thread(resolve_url, *self._head)
            if self._client is None:
                # no client-wide cookie jar: it would hand one episode's NeMo Gym session to the next
                self._client = httpx.AsyncClient(timeout=self._timeout, limits=httpx.Limits(max_connections=None),
                                                 cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])))
        return self._client, self._url

    async def _post(self, path: str, body: Any) -> httpx.Response:
        """POST with this episode's cookies; the answer's cookies become the episode's."""
        client, url = await self._http()
        jar = self.state["cookies"]
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        try:
            answer = await client.post(f"{url}/{path}", json=body, headers=headers)
        except httpx.HTTPError as e:
            raise EnvError(f"NeMo Gym server {url}: {path}: {type(e).__name__}: {e}") from e
        self.state["cookies"] = _cookies(jar, answer)
        return answer

    async def seed(self, task: Task) -> dict:
        self.state = {"cookies": {}}
        answer = await self._post("seed_session", task_row(task))
        if answer.status_code != 200:
            raise EnvError(f"seed_session: HTTP {answer.status_code}: {answer.text[:500]}")
        return self.state

    async def forward_tool(self, name: str, arguments: dict[str, Any]) -> str:
        answer = await self._post(name, arguments)
        if answer.status_code >= 500:
            raise EnvError(f"tool {name}: HTTP {answer.status_code}: {answer.text[:500]}")
        if answer.status_code != 200:  # the model's call was wrong (404 unknown tool, 422 bad arguments)
            return f"Error: {name}: HTTP {answer.status_code}: {answer.text[:2000]}"
        return answer.text

    async def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        row = task_row(task)
        output = output_items([m.to_openai() for m in messages[len(task.prompt):]])
        body = {**row, "response": response_object(f"resp_{self.session_id}", "gym_ray", output,
                                                   row["responses_create_params"].get("tools") or [])}
        answer = await self._post("verify", body)
        try:
            verdict = answer.json()
        except json.JSONDecodeError:
            verdict = None
        if answer.status_code != 200 or not isinstance(verdict, dict):
            return VerifyResult(error=f"NeMo Gym verify: HTTP {answer.status_code}: {answer.text[:1000]}")
        if verdict.get("mask_sample"):
            return VerifyResult(error=f"NeMo Gym verify masked the sample: {verdict.get('failure_kind')}: "
                                      f"{verdict.get('failure_reason')}")
        reward = verdict.get("reward")
        if not isinstance(reward, int | float) or isinstance(reward, bool) or not math.isfinite(reward):
            return VerifyResult(error=f"NeMo Gym verify: reward {reward!r} is not a finite number")
        info = {k: v for k, v in verdict.items()
                if k not in _NOT_INFO and k not in row and isinstance(v, str | int | float | bool)}
        return VerifyResult(reward=float(reward), components=verdict.get("reward_components") or {}, info=info)
