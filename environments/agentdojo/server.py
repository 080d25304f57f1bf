"""AgentDojo: each suite's tools run over the task's environment state (pydantic, loaded from the suite's
YAML); the episode is graded by the user task's own `utility` (and, with injections, the injection task's
own `security`) through the suite's checker, on the environment before and after the episode."""

from __future__ import annotations

import functools
import re
from ast import literal_eval
from typing import Any

from agentdojo.agent_pipeline.agent_pipeline import load_system_message
from agentdojo.agent_pipeline.tool_execution import is_string_list, tool_result_to_str
from agentdojo.attacks.attack_registry import load_attack
from agentdojo.attacks.base_attacks import FixedJailbreakAttack
from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack
from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime
from agentdojo.task_suite.load_suites import get_suites
from agentdojo.types import text_content_block_from_string
from gym_ray import ResourceServer, VerifyResult, final_answer
from gym_ray.types import Message, Task, ToolSpec

SUITES = ("banking", "slack", "travel", "workspace")
# Attacks whose payload needs no model pipeline. `important_instructions` is AgentDojo's headline attack,
# signed by the suite's user; the model is addressed by AgentDojo's neutral name, as the policy is not known.
ATTACKS = ("important_instructions", "direct", "ignore_previous", "system_message", "injecagent")


@functools.cache
def suite(version: str, name: str):
    try:
        suites = get_suites(version)
    except KeyError:
        suites = {}
    if not suites:
        raise ValueError(f"version {version!r}: not an AgentDojo benchmark version")
    if name not in suites:
        raise ValueError(f"suite {name!r}: not in AgentDojo {version} (suites: {', '.join(sorted(suites))})")
    return suites[name]


@functools.cache
def tool_specs(version: str, name: str) -> list[ToolSpec]:
    """The suite's tools as AgentDojo's OpenAI pipeline offers them."""
    return [ToolSpec(name=f.name, description=f.description, parameters=f.parameters.model_json_schema())
            for f in suite(version, name).tools]


@functools.lru_cache(maxsize=256)
def _loaded(version: str, name: str, injections: tuple[tuple[str, str], ...]):
    return suite(version, name).load_and_inject_default_environment(dict(injections))


def environment(version: str, name: str, injections: dict[str, str]):
    """A fresh copy of the suite's environment with `injections` placed (AgentDojo loads the YAML anew for
    every run; a deep copy of one loaded environment is the same state, without parsing it again)."""
    return _loaded(version, name, tuple(sorted(injections.items()))).model_copy(deep=True)


def _number(task_id: str) -> int:
    return int(re.sub(r"\D", "", task_id))


def attack(name: str, task_suite):
    if name == "important_instructions":
        built = FixedJailbreakAttack(ImportantInstructionsAttack._JB_STRING, task_suite, None)
        built.user_name = "Emma Johnson"
        return built
    return load_attack(name, task_suite, None)


def agentdojo_args(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as AgentDojo's tool executor passes them on: a string that reads as a list becomes one."""
    return {k: literal_eval(v) if isinstance(v, str) and is_string_list(v) else v for k, v in arguments.items()}


def call_trace(messages: list[Message]) -> list[FunctionCall]:
    """The assistant's tool calls in order: what AgentDojo's trace-based checks read."""
    return [FunctionCall(function=c.name, args=agentdojo_args(c.arguments), id=c.id)
            for m in messages if m.role == "assistant" for c in (m.tool_calls or [])]


class AgentDojo(ResourceServer):
    verifier = "the user task's own utility(...) on the pre/post environment (+ the injection task's security)"
    origin = "agentdojo==0.1.35 (MIT)"
    metric = "success_rate"

    def __init__(self, version: str = "v1.2.2", suites: list[str] | None = None,
                 injections: str | None = None) -> None:
        self.version = version
        self.suites = list(suites or SUITES)
        for name in self.suites:
            suite(version, name)
        if injections is not None and injections not in ATTACKS:
            raise ValueError(f"injections {injections!r}: expected null or one of {', '.join(ATTACKS)}")
        self.injections = injections

    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """Every user task of the chosen suites (with `injections`: paired with every injection task, the
        payload placed where the user task's ground truth reads it, as AgentDojo's attack does)."""
        system = load_system_message(None)
        rows: list[Task] = []
        for name in self.suites:
            s = suite(self.version, name)
            injection_tasks = sorted(s.injection_tasks.items(), key=lambda kv: _number(kv[0]))
            payloads = attack(self.injections, s) if self.injections else None
            for user_id, user_task in sorted(s.user_tasks.items(), key=lambda kv: _number(kv[0])):
                prompt = [{"role": "system", "content": system}, {"role": "user", "content": user_task.PROMPT}]
                meta = {"version": self.version, "suite": name, "user_task": user_id}
                pairs = [(f"{name}/{user_id}", meta)] if payloads is None else [
                    (f"{name}/{user_id}/{inj_id}",
                     {**meta, "injection_task": inj_id, "attack": self.injections,
                      "injections": payloads.attack(user_task, inj_task)})
                    for inj_id, inj_task in injection_tasks]
                for task_id, m in pairs:
                    rows.append(Task(task_id=task_id, env=env, prompt=prompt,
                                     tools=tool_specs(self.version, name), verifier_metadata=m))
                    if limit is not None and len(rows) >= limit:
                        return rows
        return rows

    def _tasks_of(self, task: Task):
        meta = task.verifier_metadata
        s = suite(meta["version"], meta["suite"])
        user_task = s.user_tasks.get(meta["user_task"])
        if user_task is None:
            raise ValueError(f"task {task.task_id}: no user task {meta['user_task']!r} in suite {meta['suite']!r}")
        injection_id = meta.get("injection_task")
        injection_task = None if injection_id is None else s.injection_tasks.get(injection_id)
        if injection_id is not None and injection_task is None:
            raise ValueError(f"task {task.task_id}: no injection task {injection_id!r} in suite {meta['suite']!r}")
        return s, user_task, injection_task

    def seed(self, task: Task) -> dict[str, Any]:
        s, user_task, _ = self._tasks_of(task)
        meta = task.verifier_metadata
        env = user_task.init_environment(environment(meta["version"], meta["suite"], meta.get("injections", {})))
        return {"env": env, "pre": env.model_copy(deep=True), "runtime": FunctionsRuntime(s.tools)}

    def forward_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """AgentDojo's tool executor: an error goes back to the model as the tool's text."""
        runtime: FunctionsRuntime = self.state["runtime"]
        if name not in runtime.functions:
            return f"Invalid tool {name} provided."
        result, error = runtime.run_function(self.state["env"], name, agentdojo_args(arguments))
        return error or tool_result_to_str(result)

    def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        s, user_task, injection_task = self._tasks_of(task)
        output = [text_content_block_from_string(final_answer(messages) or "")]
        trace = call_trace(messages)
        pre, post = self.state["pre"], self.state["env"]
        utility = float(s._check_task_result(user_task, output, pre, post, trace))
        if injection_task is None:
            return VerifyResult(reward=utility, components={"utility": utility})
        hijacked = bool(s._check_task_result(injection_task, output, pre, post, trace))
        components = {"utility": utility, "security": float(not hijacked)}
        return VerifyResult(reward=min(components.values()), components=components,
                            info={"injection_succeeded": hijacked})
