"""Inspect AI tasks as gym_ray environments: `server: inspect:<module>:<task_fn>` (or `inspect:<file.py>@<task_fn>`).

gym_ray's agent plays the one part of an Inspect task that is the model: its solver's `generate()`.
What maps to what:
- **tasks**: the task's dataset. Each `Sample` runs through the solver up to its `generate()` call (so
  `system_message`, `prompt_template`, `multiple_choice`, `use_tools` ... shape the prompt exactly as in
  Inspect); those messages are the row's prompt, the tools it set are the row's `tools` (schemas from
  Inspect's `ToolDef`), and the sample itself (input, target, choices, metadata) travels in
  `verifier_metadata.inspect`.
- **tools**: called through Inspect's own `execute_tools`, so argument checks and `ToolError`s read as
  they do in Inspect (`Error: <message>`); the sample's `store()` is the episode's.
- **verifier**: the solver runs again with the episode as its `generate()` result (the transcript as
  Inspect `ChatMessage`s, the last assistant message as `ModelOutput`), so what follows `generate()`
  (multiple_choice's answer parsing) runs too; then every scorer. A score's value maps to a float as
  Inspect's `value_to_float` does (C/I/P/N, numbers, yes/no; a dict or list: the mean of its items). The
  reward is the first scorer's (`config.reward_scorer` picks another), every scorer is a component, and
  the scores' answers and explanations go to `info`. A scorer that raises or gives no score is a verify
  error, never a 0.

Refused in one line when the env is built: Inspect sandboxes (the task's, a sample's, sample files or
setup scripts), solvers that never reach `generate()` (agents such as `react()` call a model themselves),
handoffs to other agents, and model-graded scorers when no `config.grader_model` (an Inspect model name,
with `config.grader_args`) is set. A solver that calls `generate()` twice (`self_critique()`) is a verify
error naming it.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gym_ray import compat
from gym_ray.resources.runtime import EnvError
from gym_ray.resources.server import ResourceServer
from gym_ray.types import Message, Task, ToolCall, ToolSpec, VerifyResult

_MODEL = "gym_ray/policy"  # the model name Inspect's TaskState and ModelOutput carry


class _Generated(Exception):
    """Raised by the capturing `generate()`: the solver reached the model call with this state."""

    def __init__(self, state: Any) -> None:
        self.state = state


def load_task(spec: str, task_args: dict[str, Any]) -> Any:
    """The Inspect `Task` that `module:task_fn` or `path/to/file.py@task_fn` names, called with `task_args`."""
    from inspect_ai import Task as InspectTask

    if "@" in spec:
        path, _, name = spec.rpartition("@")
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise ValueError(f"config.task: {spec!r}: no file {file}")
        module_spec = importlib.util.spec_from_file_location(f"gym_ray_inspect_{file.stem}", file)
        module = sys.modules[module_spec.name] = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module_name, _, name = spec.rpartition(":")
        if not module_name or not name:
            raise ValueError(f"config.task: {spec!r} is not <module>:<task_fn> or <file.py>@<task_fn>")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise ValueError(f"config.task: {spec!r}: module {module_name!r} is not installed ({e})") from None
    found = getattr(module, name, None)
    if found is None:
        raise ValueError(f"config.task: {spec!r}: {module.__name__} has no {name!r}")
    task = found if isinstance(found, InspectTask) else found(**task_args)
    if not isinstance(task, InspectTask):
        raise ValueError(f"config.task: {spec!r} returned {type(task).__name__}, not an inspect_ai Task")
    return task


def _refusal(task: Any, samples: list[Any], graded: bool) -> str | None:
    """Why this task cannot run under gym_ray (one line), or None."""
    from inspect_ai.util import registry_info

    if task.sandbox is not None:
        return f"task {task.name!r} runs in an Inspect sandbox ({task.sandbox.type}): gym_ray runs Inspect " \
               "tools in process, without sandboxes"
    for s in samples:
        if s.sandbox is not None or s.files or s.setup:
            return f"task {task.name!r}, sample {s.id!r} needs an Inspect sandbox (its sandbox, files or " \
                   "setup): gym_ray runs Inspect tools in process, without sandboxes"
    if not graded:
        for scorer in task.scorer or []:
            name = registry_info(scorer).name
            if "model_graded" in name:
                return f"task {task.name!r}: scorer {name} grades with a model: set config.grader_model " \
                       "(an Inspect model, e.g. openai/gpt-4o-mini) or use another scorer"
    return None


def _sample_state(sample: Any) -> Any:
    """A fresh TaskState for `sample`, as Inspect's eval makes one (input messages marked as input)."""
    from inspect_ai.model import ChatMessageUser
    from inspect_ai.scorer import Target
    from inspect_ai.solver import TaskState

    if isinstance(sample.input, str):
        messages = [ChatMessageUser(content=sample.input, source="input")]
    else:
        messages = deepcopy(sample.input)
        for m in messages:
            m.source = "input"
    return TaskState(model=_MODEL, sample_id=sample.id, epoch=1, input=sample.input, messages=messages,
                     target=Target(sample.target), choices=sample.choices, metadata=dict(sample.metadata or {}))


def _gym_message(m: Any) -> Message:
    tool_calls = [ToolCall(id=c.id, name=c.function, arguments=c.arguments) for c in m.tool_calls] \
        if getattr(m, "tool_calls", None) else None
    return Message(role=m.role, content=m.text, tool_calls=tool_calls,
                   tool_call_id=getattr(m, "tool_call_id", None) if m.role == "tool" else None)


def _inspect_message(m: Message) -> Any:
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageTool, ChatMessageUser
    from inspect_ai.tool import ToolCall as InspectCall

    if m.role == "assistant":
        calls = [InspectCall(id=c.id, function=c.name, arguments=c.arguments) for c in m.tool_calls or []]
        return ChatMessageAssistant(content=m.content, tool_calls=calls or None, model=_MODEL)
    if m.role == "tool":
        return ChatMessageTool(content=m.content, tool_call_id=m.tool_call_id, function=m.name)
    return (ChatMessageSystem if m.role in ("system", "developer") else ChatMessageUser)(content=m.content)


def _value(value: Any) -> float:
    """Inspect's `value_to_float` for a scalar; the mean over a dict's or list's items."""
    from inspect_ai.scorer import value_to_float

    to_float = value_to_float()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return sum(to_float(v) for v in value) / len(value) if value else 0.0
    return to_float(value)


@dataclass
class _Episode:
    sample: Any
    tools: dict[str, Any]  # offered name -> Inspect Tool
    store: Any  # the sample's Inspect Store, what its tools' `store()` reads


class InspectEnv(ResourceServer):
    """An Inspect AI task: its dataset, its solver's prompt and tools, its scorers."""

    verifier = "the task's Inspect scorers"
    origin = "inspect_ai task"

    def __init__(self, task: str, task_args: dict[str, Any] | None = None, reward_scorer: str | None = None,
                 grader_model: str | None = None, grader_args: dict[str, Any] | None = None) -> None:
        from inspect_ai.solver import chain
        from inspect_ai.util import registry_info

        self.inspect_task = load_task(task, dict(task_args or {}))
        self.samples = list(self.inspect_task.dataset)
        for i, s in enumerate(self.samples):
            if s.id is None:
                s.id = i + 1  # what Inspect's eval numbers them
        self.grader_model, self.grader_args = grader_model, dict(grader_args or {})
        self._grader: Any = None
        if why := _refusal(self.inspect_task, self.samples, graded=grader_model is not None):
            raise ValueError(f"config.task: {why}")
        self.scorers: dict[str, Any] = {}
        for scorer in self.inspect_task.scorer or []:
            name = registry_info(scorer).name.split("/")[-1]
            self.scorers[name if name not in self.scorers else f"{name}{len(self.scorers) + 1}"] = scorer
        if not self.scorers:
            raise ValueError(f"config.task: task {self.inspect_task.name!r} has no scorer (gym_ray needs a verifier)")
        if reward_scorer is not None and reward_scorer not in self.scorers:
            raise ValueError(f"config.reward_scorer: {reward_scorer!r} is not one of the task's scorers "
                             f"{list(self.scorers)}")
        self.reward_scorer = reward_scorer or next(iter(self.scorers))
        setup = self.inspect_task.setup
        self.solver = self.inspect_task.solver if setup is None else chain(setup, self.inspect_task.solver)

    # --- the solver up to generate() -------------------------------------------------------------
    async def _solve(self, state: Any, generate: Any) -> Any:
        """The solver on `state` with `state` as the sample's (its `store()` and `sample_state()`), as in eval."""
        compat.inspect_enter_sample(state)
        return await self.solver(state, generate)

    async def _prompt_state(self, sample: Any) -> Any:
        """The TaskState the solver hands `generate()` for `sample`; one line when it never gets there."""
        async def capture(state: Any, *args: Any, **kwargs: Any) -> Any:
            raise _Generated(state)

        try:
            await asyncio.create_task(self._solve(_sample_state(sample), capture))  # its own Inspect context
        except _Generated as reached:
            if compat.inspect_hands_off(reached.state.tools):
                raise ValueError(f"config.task: task {self.inspect_task.name!r}'s solver hands off to other agents "
                                 "(handoff()): gym_ray plays one agent") from None
            return reached.state
        except Exception as e:
            raise ValueError(f"config.task: task {self.inspect_task.name!r}'s solver failed before generate() "
                             f"({type(e).__name__}: {e}); agent solvers (react(), multi-agent) call a model "
                             "themselves and cannot run under gym_ray") from None
        raise ValueError(f"config.task: task {self.inspect_task.name!r}'s solver never calls generate(): gym_ray's "
                         "agent can only play a solver's generate()")

    # --- tasks ------------------------------------------------------------------------------------
    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """The dataset's samples as rows: the solver's prompt and tools, the sample in verifier_metadata.
        Called from sync code, maybe under a running loop: the solver runs on a loop of its own."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._rows(env, limit)).result()

    async def _rows(self, env: str, limit: int | None) -> list[Task]:
        from inspect_ai.tool import ToolDef

        rows = []
        for sample in self.samples[:limit]:
            state = await self._prompt_state(sample)
            specs = [ToolSpec(name=d.name, description=d.description,
                              parameters=d.parameters.model_dump(exclude_none=True))
                     for d in (ToolDef(t) for t in state.tools)]
            rows.append(Task(task_id=f"{self.inspect_task.name}-{sample.id}", env=env,
                             prompt=[_gym_message(m) for m in state.messages], tools=specs or None,
                             verifier_metadata={"inspect": sample.model_dump(mode="json", exclude_none=True)}))
        return rows

    def _sample(self, task: Task) -> Any:
        from inspect_ai.dataset import Sample

        data = (task.verifier_metadata or {}).get("inspect")
        if data is None:
            raise EnvError(f"task {task.task_id}: no verifier_metadata.inspect (rows come from the task's dataset)")
        return Sample.model_validate(data)

    # --- episodes ---------------------------------------------------------------------------------
    async def seed(self, task: Task) -> _Episode:
        from inspect_ai.tool import ToolDef

        sample = self._sample(task)
        state = await self._prompt_state(sample)
        return _Episode(sample=sample, tools={ToolDef(t).name: t for t in state.tools}, store=state.store)

    async def forward_tool(self, name: str, arguments: dict[str, Any]) -> str:
        from inspect_ai.model import ChatMessageAssistant, execute_tools
        from inspect_ai.tool import ToolCall as InspectCall

        ep: _Episode = self.state
        if name not in ep.tools:
            return f"Error: unknown tool {name!r}. Available tools: {', '.join(ep.tools) or 'none'}."
        call = ChatMessageAssistant(content="", tool_calls=[InspectCall(id="call", function=name, arguments=arguments)])

        async def run() -> Any:
            compat.inspect_use_store(ep.store)
            return await execute_tools([call], list(ep.tools.values()))

        (out, *_) = (await asyncio.create_task(run())).messages
        return f"Error: {out.error.message}" if out.error else out.text

    async def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        ep: _Episode = self.state
        try:
            return await asyncio.create_task(self._score(task, ep, messages))
        except _Unscored as e:
            return VerifyResult(error=f"{self.inspect_task.name}: {e}")

    async def _score(self, task: Task, ep: _Episode, messages: list[Message]) -> VerifyResult:
        """Replay the solver with the episode as generate()'s result, then run every scorer on the state."""
        from inspect_ai.model import ChatCompletionChoice, ModelOutput

        calls = 0
        episode = [_inspect_message(m) for m in messages[len(task.prompt):]]

        async def replay(state: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise _Unscored("the solver calls generate() more than once (e.g. self_critique()): gym_ray's "
                                "episode is one generate()")
            if [_gym_message(m).model_dump() for m in state.messages] != [m.model_dump() for m in task.prompt]:
                raise _Unscored("the solver built another prompt than the row's (a shuffled or random solver)")
            for key in [k for k in state.store.keys() if k not in ep.store]:  # the store as the episode left it
                state.store.delete(key)
            for key, value in ep.store.items():
                state.store.set(key, value)
            state.messages.extend(episode)
            last = next((m for m in reversed(episode) if m.role == "assistant"), None)
            state.output = ModelOutput(model=_MODEL, choices=[ChatCompletionChoice(
                message=last, stop_reason="tool_calls" if last.tool_calls else "stop")]) if last else \
                ModelOutput.from_content(model=_MODEL, content="")
            return state

        if self.grader_model is not None:
            self._bind_grader()
        try:
            state = await self._solve(_sample_state(ep.sample), replay)
        except _Unscored:
            raise
        except Exception as e:
            raise _Unscored(f"the solver failed after generate(): {type(e).__name__}: {e}") from e
        scores, components = {}, {}
        for name, scorer in self.scorers.items():
            try:
                score = await scorer(state, state.target)
            except Exception as e:
                raise _Unscored(f"scorer {name} raised {type(e).__name__}: {e}") from e
            if score is None:
                raise _Unscored(f"scorer {name} gave no score")
            components[name] = _value(score.value)
            if isinstance(score.value, dict):  # Inspect's metrics are per key: so are the components
                components.update({f"{name}/{k}": _value(v) for k, v in score.value.items()})
            scores[name] = {"value": score.value, "answer": score.answer, "explanation": score.explanation}
        return VerifyResult(reward=components[self.reward_scorer], components=components, info={"scores": scores})

    def _bind_grader(self) -> None:
        """The configured grader as Inspect's active model and `grader` role (what model-graded scorers use)."""
        from inspect_ai.model import GenerateConfig, get_model

        if self._grader is None:
            self._grader = get_model(self.grader_model, **self.grader_args)  # one per env, made on first use
        compat.inspect_bind_grader(self._grader, GenerateConfig())


class _Unscored(Exception):
    """The scorers could not score this episode (a verify error, not a reward)."""
