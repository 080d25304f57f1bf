"""`PolicyClient`s: the one way agents reach a policy, built by `make_policy_client` inside any actor.

Hosted kinds (scripted, vllm) are called through a Serve `DeploymentHandle` (no HTTP hop), which keeps
Serve's routing, replicas and autoscaling. `model.handle_transport` picks Ray's default transport or the
gRPC one (`_by_reference=False`); gRPC measured ~2x faster for a trivial method on
a quiet box, but benchmarks/policy_overhead.py measured the default as fast or faster for `generate` on
the shared machine, so the default stays the default. A session id pins an episode's calls to one
replica (`serving.routing.PinnedRouter`, see names.serve_options). Calls to the scripted policy are coalesced
(`serving.batch`): its per-call cost is all Serve's.
"""

from __future__ import annotations

from typing import Any

from gym_ray import compat
from gym_ray.clients import Generation, PolicyClient
from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.models.names import policy_deployment_name, tokenizer_path_for
from gym_ray.serving.batch import Coalescer
from gym_ray.types import Message, ToolSpec


class HandlePolicyClient:
    """A policy hosted on Serve, reached by handle; picklable (the handle is re-made after unpickling).

    Besides `generate`/`chat` it carries the trainer hooks, which go to *every* replica (broadcast).
    """

    def __init__(self, app_name: str, deployment: str, model_name: str, tokenizer_path: str, grpc: bool = False,
                 *, batch: bool = False, sticky: bool = False):
        self.app_name = app_name
        self.deployment = deployment
        self.model_name = model_name
        self._tokenizer_path = tokenizer_path
        self.grpc = grpc
        self.batch = batch
        self.sticky = sticky
        self._handle: Any = None
        self._fast: Any = None
        self._calls: Coalescer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_fast": None, "_calls": None}

    def _h(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(self.deployment, self.app_name)
            self._fast = compat.with_transport(self._handle, by_reference=False) if self.grpc else self._handle
            if self.batch:
                self._calls = Coalescer(self._fast, sticky=self.sticky)
        return self._handle

    def tokenizer_path(self) -> str:
        return self._tokenizer_path

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingConfig, session_id: str | None = None
    ) -> Generation:
        self._h()
        args = (list(prompt_token_ids), sampling.model_dump())
        if self._calls is not None:
            out = await self._calls.call("generate", *args, session_id=session_id)
        else:
            h = self._fast if session_id is None else self._fast.options(session_id=session_id)
            out = await h.generate.remote(*args)
        return Generation.model_validate(out)

    async def chat(self, messages: list[Message], tools: list[ToolSpec] | None, sampling: SamplingConfig) -> dict:
        msgs = [m.to_openai() if isinstance(m, Message) else m for m in messages]
        specs = [t.to_openai() for t in tools] if tools else None
        return await self._h().chat_messages.remote(msgs, specs, sampling.model_dump())

    # -- trainer hooks (all replicas) -------------------------------------------------------------
    async def _broadcast(self, name: str, /, *args: Any, **kwargs: Any) -> list:
        return await self._h().broadcast(name, *args, **kwargs).results_async()

    async def pause(self, **kwargs: Any) -> None:
        """Stop generating on every replica (vLLM: in-flight requests finish or abort per `kwargs`)."""
        await self._broadcast("pause", **kwargs)

    async def resume(self) -> None:
        await self._broadcast("resume")

    async def is_paused(self) -> bool:
        return all(await self._broadcast("is_paused"))

    async def collective_rpc(self, method: str, args: tuple = (), kwargs: dict | None = None,
                             timeout: float | None = None) -> list:
        """Call `method` on every engine worker of every replica (weight sync); results per replica."""
        return await self._broadcast("collective_rpc", method=method, timeout=timeout, args=args,
                                     kwargs=kwargs or {})

    async def policy_version(self) -> int:
        return max(await self._broadcast("get_policy_version"))

    async def set_policy_version(self, version: int) -> int:
        await self._broadcast("set_policy_version", version)
        return version

    async def begin_weight_update(self, mode: str) -> int:
        """On every replica: hold new generations and `finish`, `abort` (to continue under the new weights)
        or `drop` those in flight (gym_ray.models.updates); returns once none runs, with how many were cut."""
        return sum(await self._broadcast("begin_weight_update", mode))

    async def end_weight_update(self, version: int) -> int:
        """On every replica: stamp `version` on what generates from now, and let held generations go."""
        await self._broadcast("end_weight_update", version)
        return version

    async def update_weights(self, method: str, args: tuple = (), kwargs: dict | None = None,
                             timeout: float | None = None, version: int | None = None,
                             mode: str | None = None) -> int:
        """One weight update: `collective_rpc(method)`, drop the stale prefix cache, raise the version.

        Returns the new policy version (`version`, or the current one + 1), stamped on every later
        generation. With `mode` (`finish`, `abort`, `drop`: `collect.weight_update`) the load is bracketed
        by `begin_weight_update` / `end_weight_update`, so collection goes on around it; without, pause
        before and resume after when no request may see mixed weights.
        """
        old = await self.policy_version()
        new = version if version is not None else old + 1
        if mode is not None:
            await self.begin_weight_update(mode)
        try:
            await self.collective_rpc(method, args, kwargs, timeout)
            await self._broadcast("reset_prefix_cache")
        except BaseException:
            if mode is not None:  # the load failed: generation goes on, stamped with the old version
                await self.end_weight_update(old)
            raise
        if mode is not None:
            await self.end_weight_update(new)
        return await self.set_policy_version(new)


def make_policy_client(cfg: ModelConfig, app_name: str) -> PolicyClient:
    """The client for policy `cfg` deployed as Serve app `app_name` (ignored for external endpoints).

    Cheap to build (no network until the first call) and picklable, so build it in the driver and pass
    it to actors, or build it inside each actor.
    """
    if cfg.kind == "openai":
        from gym_ray.models.external import OpenAIPolicyClient

        return OpenAIPolicyClient(cfg, tokenizer_path_for(cfg))
    if cfg.kind == "scripted" and cfg.hosting == "local":
        from gym_ray.models.scripted import LocalScriptedClient

        return LocalScriptedClient(cfg, tokenizer_path_for(cfg))
    # Only the scripted server answers `call_batch`: a script answers at once, so a batch waits for no one,
    # while a batch of vLLM generations would wait for its longest one.
    return HandlePolicyClient(app_name, policy_deployment_name(cfg), cfg.name, tokenizer_path_for(cfg),
                              grpc=cfg.handle_transport == "grpc", batch=cfg.kind == "scripted",
                              sticky=cfg.autoscaling is not None or cfg.num_replicas > 1)
