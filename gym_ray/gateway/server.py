"""The gateway's HTTP side: one in-process ASGI server per event loop (i.e. per agent actor), many sessions.

Why in the agent actor: the episode's policy client, tokenizer and transcript already live there, so a
call costs one loopback HTTP hop and nothing else (no second Ray hop, no state shared between replicas,
no serialization of transcripts); the server starts with the first external episode and lives as long
as the actor. The agent program runs on the same node (a coroutine, a subprocess or a sandbox), so a
loopback port (or, for the sandbox, a Unix socket bound into it) is all it needs.

Routes, under `/sessions/<id>`:
- `POST /v1/chat/completions` (`stream` true or false; tools; `logprobs`; `return_token_ids`)
- `POST /v1/responses` (streaming and not; stateless: see `responses.py`)
- `GET /v1/models`
- `GET /tools`, `POST /tools/<name>` (body: the arguments object; answer `{"output": ...}`): the
  environment's tools, run in the episode's env session.
Session ids are random tokens (not rollout ids), and a live session answers only its own program: any
other process that learned its URL gets 403 (`peer.py`). An unknown id answers 404; an ended episode's id
answers 410 (none of these is retried by the `openai` client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from gym_ray.agents.episode import Episode
from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.gateway.params import GatewayError
from gym_ray.gateway.peer import PEER_KEY, Peer, belongs, peer_protocol
from gym_ray.gateway.session import OFF_LOOP_SIZE, GatewaySession

UDS_NAME = "gateway.sock"
_ENDED_KEPT = 65536  # ended session ids remembered (410 instead of 404)
_SESSION_PATH = re.compile(r"/sessions/([^/]+)/")


def _error(e: GatewayError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


def _too_large(what: str, cap: int) -> GatewayError:
    return GatewayError(413, f"the request body {what}; this gateway takes at most {cap} bytes "
                             "(agent.kwargs.max_request_bytes)", code="request_too_large")


class Gateway:
    """Sessions by id and the server that routes to them."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port: int | None = None
        self.uds_dir: str | None = None
        self.uds_path: str | None = None
        self.sessions: dict[str, GatewaySession] = {}
        self._owners: dict[str, int] = {}  # session id -> the pid whose process tree runs its program
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._server = None
        self._task: asyncio.Task | None = None
        self.app = self._guarded(self._build_app())

    # -- sessions --------------------------------------------------------------------------------
    def open(self, episode: Episode, model_name: str) -> GatewaySession:
        sid = secrets.token_urlsafe(12)
        s = GatewaySession(sid, episode, model_name)
        self.sessions[sid] = s
        return s

    def close(self, session: GatewaySession, reason: str = "the episode ended") -> None:
        """No more calls for this session: later ones answer 410."""
        session.end(reason)
        self._owners.pop(session.id, None)
        if self.sessions.pop(session.id, None) is not None:
            self._ended[session.id] = session.ended or reason
            while len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)

    def bind(self, session: GatewaySession, pid: int) -> None:
        """Only the process tree of `pid` (the program started for this session) may call it from now on;
        until then (and for programs called in-process) only this process may."""
        self._owners[session.id] = pid

    def _guarded(self, app):
        """The app behind the caller check: a live session answers 403 to any process but its program's."""

        async def guarded(scope, receive, send):
            if scope["type"] == "http" and (m := _SESSION_PATH.match(scope["path"])):
                s = self.sessions.get(m[1])
                if s is not None and not self._may_call(s, scope.get("state", {}).get(PEER_KEY)):
                    e = GatewayError(403, f"session {s.id} belongs to another program; its calls come only from "
                                          "the process gym_ray started for it", "permission_error", "session_not_yours")
                    return await _error(e)(scope, receive, send)
            return await app(scope, receive, send)

        return guarded

    def _may_call(self, s: GatewaySession, peer: Peer | None) -> bool:
        if peer is None:
            return False
        if s.id not in peer.allowed:
            if not belongs(peer, self._owners.get(s.id)):
                return False
            peer.allowed.add(s.id)
        return True

    def base_url(self, session: GatewaySession) -> str:
        return f"http://{self.host}:{self.port}/sessions/{session.id}/v1"

    def _session(self, sid: str) -> GatewaySession:
        s = self.sessions.get(sid)
        if s is not None:
            return s
        if sid in self._ended:
            raise GatewayError(410, f"session {sid} has ended ({self._ended[sid]}); no more calls are taken",
                               "session_ended", "session_ended")
        raise GatewayError(404, f"unknown session {sid!r}", "not_found_error", "session_not_found")

    # -- HTTP ------------------------------------------------------------------------------------
    def _build_app(self):
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def body_of(request: Request, s: GatewaySession) -> tuple[Any, int]:
            """The JSON body and its size in bytes. Over the session's cap: 413, from Content-Length before
            reading and again while reading (a chunked upload declares none). A big body is parsed in a
            worker thread, off the loop that serves the actor's other sessions."""
            cap = s.max_request_bytes
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _too_large(f"is {int(declared)} bytes", cap)
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise _too_large(f"exceeds {cap} bytes", cap)
                chunks.append(chunk)
            raw = b"".join(chunks)
            try:
                return (await asyncio.to_thread(json.loads, raw) if size > OFF_LOOP_SIZE else json.loads(raw)), size
            except (ValueError, RecursionError) as e:
                raise GatewayError(400, f"request body is not JSON: {e}") from None

        async def chat(request: Request):
            try:
                s = self._session(request.path_params["sid"])
                body, size = await body_of(request, s)
                response, _, _ = await s.chat_completion(body, size=size)
            except GatewayError as e:
                return _error(e)
            except Exception as e:  # a gateway bug: the episode must not pass as ok
                return _internal(request, e)
            if body.get("stream"):
                return StreamingResponse(_sse(response, body), media_type="text/event-stream")
            return JSONResponse(response)

        def _internal(request: Request, e: Exception):
            s = self.sessions.get(request.path_params.get("sid", ""))
            if s is not None:
                s.ep.fail(Status.ABORTED, f"gateway: {type(e).__name__}: {e}",
                          Failure(stage=FailureStage.AGENT, kind=FailureKind.EXCEPTION))
                s.end("the gateway failed")
            return _error(GatewayError(500, f"gateway error: {type(e).__name__}: {e}", "server_error"))

        async def responses(request: Request):
            from gym_ray.gateway.responses import create_response, response_events

            try:
                s = self._session(request.path_params["sid"])
                body, size = await body_of(request, s)
                response = await create_response(s, body, size)
            except GatewayError as e:
                return _error(e)
            except Exception as e:
                return _internal(request, e)
            if isinstance(body, dict) and body.get("stream"):
                return StreamingResponse(response_events(response), media_type="text/event-stream")
            return JSONResponse(response)

        async def models(request: Request):
            try:
                s = self._session(request.path_params["sid"])
            except GatewayError as e:
                return _error(e)
            return JSONResponse({"object": "list", "data": [
                {"id": s.model_name, "object": "model", "created": 0, "owned_by": "gym_ray"}]})

        async def tools(request: Request):
            try:
                return JSONResponse(await self._session(request.path_params["sid"]).tools())
            except GatewayError as e:
                return _error(e)
            except Exception as e:
                return _internal(request, e)

        async def call_tool(request: Request):
            try:
                s = self._session(request.path_params["sid"])
                args, _ = await body_of(request, s)
                if not isinstance(args, dict):
                    raise GatewayError(400, "the body must be the tool's arguments as a JSON object")
                return JSONResponse({"output": await s.call_tool(request.path_params["name"], args)})
            except GatewayError as e:
                return _error(e)
            except Exception as e:
                return _internal(request, e)

        async def health(request: Request):
            return JSONResponse({"sessions": len(self.sessions)})

        return Starlette(routes=[
            Route("/sessions/{sid}/v1/chat/completions", chat, methods=["POST"]),
            Route("/sessions/{sid}/v1/responses", responses, methods=["POST"]),
            Route("/sessions/{sid}/v1/models", models, methods=["GET"]),
            Route("/sessions/{sid}/tools", tools, methods=["GET"]),
            Route("/sessions/{sid}/tools/{name}", call_tool, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ])

    async def start(self) -> None:
        """Serve on a free loopback port and on a Unix socket in a fresh directory (`uds_dir`), which a
        sandbox can bind in: the only way out of its network namespace."""
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # the actor's (or test's) signal handlers stay as they are
                yield

        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it; without it every small response waits ~40 ms on Nagle's
        # algorithm against the client's delayed ACK (measured: 44 ms -> 1 ms per loopback call).
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tcp.bind((self.host, 0))
        self.port = tcp.getsockname()[1]
        self.uds_dir = tempfile.mkdtemp(prefix="gym_ray_gateway_")
        os.chmod(self.uds_dir, 0o755)  # sandboxed programs may run under another uid
        weakref.finalize(self, shutil.rmtree, self.uds_dir, True)  # also when a test's loop just ends
        self.uds_path = os.path.join(self.uds_dir, UDS_NAME)
        uds = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        uds.bind(self.uds_path)
        os.chmod(self.uds_path, 0o777)
        socks = [tcp, uds]
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False,
                                timeout_keep_alive=30, backlog=4096, http=peer_protocol(AutoHTTPProtocol))
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=socks))
        deadline = time.monotonic() + 30
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("gateway server exited at start")
            if time.monotonic() > deadline:
                raise RuntimeError("gateway server did not start within 30 s")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
        if self.uds_dir:
            shutil.rmtree(self.uds_dir, ignore_errors=True)


async def _sse(response: dict, body: dict) -> AsyncIterator[bytes]:
    """The finished answer as `chat.completion.chunk` events (the policy is token-in/token-out, not
    incremental, so the stream starts when the generation is done)."""
    choice = response["choices"][0]
    msg = choice["message"]
    base = {"id": response["id"], "object": "chat.completion.chunk", "created": response["created"],
            "model": response["model"]}

    def event(delta: dict, finish: str | None = None, logprobs: dict | None = None, **extra) -> bytes:
        c = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return b"data: " + json.dumps({**base, "choices": [c], **extra}).encode() + b"\n\n"

    ignored = {"ignored_params": response["ignored_params"]} if "ignored_params" in response else {}
    yield event({"role": "assistant", "content": ""}, **ignored)
    if msg.get("content"):
        yield event({"content": msg["content"]}, logprobs=choice.get("logprobs"))
    for i, call in enumerate(msg.get("tool_calls") or ()):
        yield event({"tool_calls": [{"index": i, **call}]})
    yield event({}, choice["finish_reason"])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + json.dumps({**base, "choices": [], "usage": response["usage"]}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


_GATEWAYS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gateway] = weakref.WeakKeyDictionary()
_STARTING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def get_gateway() -> Gateway:
    """This event loop's gateway, started on first use (one per agent actor)."""
    loop = asyncio.get_running_loop()
    gw = _GATEWAYS.get(loop)
    if gw is not None:
        return gw
    lock = _STARTING.setdefault(loop, asyncio.Lock())
    async with lock:
        gw = _GATEWAYS.get(loop)
        if gw is None:
            gw = Gateway()
            await gw.start()
            _GATEWAYS[loop] = gw
    return gw
