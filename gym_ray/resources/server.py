"""`ResourceServer`: what an environment author subclasses.

An environment is a class with `@tool` methods and a `verify`. Everything else (sessions, schemas,
argument checks, error text for the model, HTTP routes, Serve) is done by the hosting runtime.
Per-episode state is `self.state`: the runtime binds the calling episode's session to the server
through a context variable for the duration of each call, so one instance serves many episodes.
"""

from __future__ import annotations

import copy
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gym_ray.resources.tools import ToolDef, collect_tools
from gym_ray.types import Message, StepResult, Task, ToolSpec, VerifyResult


@dataclass
class Session:
    """One episode's server-side record; `state` is whatever `seed` returned."""

    id: str
    task: Task
    state: Any = None
    last_used: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[Session | None] = ContextVar("gym_ray_session", default=None)


def current_session() -> Session:
    session = _current.get()
    if session is None:
        raise RuntimeError(
            "no episode is bound: self.state / self.task are only available inside a tool, "
            "seed, verify, reset, step or close called by the runtime"
        )
    return session


class ResourceServer:
    """Base class of environments: override `verify` or `score` (and `seed` for state, `reset`/`step`
    for games).

    Class settings: `session_ttl_s` (idle sessions are dropped after this many seconds) and
    `max_sessions` (the oldest idle sessions are dropped beyond this many). Constructor keyword
    arguments come from the environment's `config:` block in the run YAML.
    """

    session_ttl_s: ClassVar[float] = 1800.0
    max_sessions: ClassVar[int] = 100_000
    # One line each for `gym-ray envs`: how an episode is scored, and where the environment comes from.
    verifier: ClassVar[str] = ""
    origin: ClassVar[str] = ""
    # The benchmark's headline number in `gym-ray metrics` and the report: "pass@k" (unbiased pass@1..n),
    # "accuracy" / "success_rate" (share of episodes whose reward reaches the pass threshold) or
    # "mean_reward" (the average score, for graded rewards).
    metric: ClassVar[str] = "mean_reward"
    # Why this environment's episodes cannot be forked (tree rollouts), when their state lives outside
    # gym_ray (another server, a subprocess): one line, shown when a run asks to branch. Empty: forkable.
    fork_refusal: ClassVar[str] = ""
    # How many results of `@tool(cacheable=True)` calls each replica keeps (least recently used dropped).
    tool_cache_size: ClassVar[int] = 1024
    # Whether `verify` reads the episode's state (`self.state`, built by its tool calls): re-verifying a stored
    # rollout (`gym-ray reverify`) then first replays the row's recorded tool calls into a fresh session and
    # scores it only when every result matches the record. None: whenever the server keeps state (`seed` or
    # `reset` overridden); set False when verify reads only the task and the messages.
    verify_reads_state: ClassVar[bool | None] = None
    tool_defs: ClassVar[dict[str, ToolDef]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tool_defs = collect_tools(cls)

    # --- the calling episode -------------------------------------------------------------------
    @property
    def state(self) -> Any:
        """This episode's state (what `seed` returned); assignable."""
        return current_session().state

    @state.setter
    def state(self, value: Any) -> None:
        current_session().state = value

    @property
    def task(self) -> Task:
        return current_session().task

    @property
    def session_id(self) -> str:
        return current_session().id

    # --- hooks (sync or async) -----------------------------------------------------------------
    def seed(self, task: Task) -> Any:
        """Return the initial state of a new episode (default: an empty dict)."""
        return {}

    def verify(self, task: Task, messages: list[Message]) -> float | VerifyResult:
        """Score the episode: a float, or a `VerifyResult` with named components and a reason.

        A sync `verify` runs in a worker thread so it never stalls other episodes; for CPU-heavy
        scoring call `gym_ray.resources.run_in_process` from it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement verify() or score()")

    def score(self, task: Task, answer: str) -> float | VerifyResult:
        """Score only the final answer's text: override this instead of `verify` when nothing else in
        the transcript matters. An episode with no final answer scores 0 (reason "no final answer")
        without calling it. Sync or async, like `verify`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    def reset(self, task: Task) -> str:
        """Step-driven environments: start the episode, return the first observation."""
        raise NotImplementedError(f"{type(self).__name__} is not step-driven (no reset())")

    def step(self, action: str) -> StepResult:
        """Step-driven environments: apply the model's action text, return what follows."""
        raise NotImplementedError(f"{type(self).__name__} is not step-driven (no step())")

    def forward_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Environments whose tools live in another server (a NeMo Gym resources server, an MCP server):
        a call to a tool not declared with `@tool` comes here (the agent offers the task's `tools`).
        Sync or async; raise `EnvError` when the other server, not the model, failed."""
        raise NotImplementedError

    def forwarded_tools(self) -> list[ToolSpec]:
        """The tools `forward_tool` serves, offered beside the `@tool` ones when a task names none (an MCP
        server's listing). Sync or async; default none (the NeMo Gym bridge offers the task's)."""
        return []

    def fork(self, state: Any) -> Any:
        """A branch's own copy of this episode's `state` (tree rollouts fork a live episode): a deep copy by
        default. Override it when the state holds what a copy does not duplicate (open files, processes,
        handles to other servers); the parent episode is bound (`self.state` is `state`). Sync or async."""
        return copy.deepcopy(state)

    def close(self) -> None:
        """Release what this episode holds (called on close_session and on expiry)."""

    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """Environments that bring their own dataset (a verifiers taskset): the task rows used when the env's
        config lists no `data` files, at most `limit`. Called on a driver-side instance."""
        raise NotImplementedError(f"{type(self).__name__} has no tasks of its own: list `data` files")

    @classmethod
    def has_tasks(cls) -> bool:
        return cls.tasks is not ResourceServer.tasks

    @classmethod
    def is_stateful(cls) -> bool:
        """A server whose episodes carry state cannot verify an unknown (expired) session."""
        return cls.seed is not ResourceServer.seed or cls.reset is not ResourceServer.reset

    @classmethod
    def needs_live_state(cls) -> bool:
        """`verify_reads_state`, defaulted from `is_stateful()`."""
        return cls.is_stateful() if cls.verify_reads_state is None else cls.verify_reads_state

    @classmethod
    def forwards_tools(cls) -> bool:
        return cls.forward_tool is not ResourceServer.forward_tool
