"""tau2_bench: τ²'s gold actions replayed as the agent's (and in telecom the customer's) tool calls score 1
under τ²'s own evaluators, a wrong argument (or a missing fact, a forbidden write, a missing step) scores a
real 0, and the conversation loop runs with a simulated customer (a second scripted policy) to a user stop."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from env_helpers import ENVIRONMENTS
from fault_helpers import ScriptClient
from gym_ray_env_tau2_bench.agent import Tau2Agent
from gym_ray_env_tau2_bench.server import USER_STOPS, Tau2Bench, domain, new_environment

from gym_ray.agents.base import EpisodeContext, load_tokenizer
from gym_ray.config import ModelConfig, SamplingConfig, load_config
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.types import ToolCall

# Test-split tasks of every kind: gold writes, a read-only gold (the right move changes nothing), no
# gold actions at all (a refusal), a fact the agent must tell the customer.
SAMPLE = {"airline": ["2", "6", "26"], "retail": ["5", "62", "65"]}


def env_config():
    return load_config(ENVIRONMENTS / "tau2_bench" / "config.yaml").envs["tau2_bench"]


def sample_tasks():
    tasks = {t.task_id: t for t in Tau2Bench(domains=list(SAMPLE), split="test").tasks("tau2_bench")}
    return [tasks[f"{d}-{tid}"] for d, ids in SAMPLE.items() for tid in ids]


def gold(task):
    return domain(task.verifier_metadata["domain"])[2][task.verifier_metadata["tau2_task_id"]].evaluation_criteria


def wrong(value):
    """The first leaf of an argument changed: a string gets a suffix, a number grows by one."""
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    keys = list(value) if isinstance(value, dict) else range(len(value))
    first = next(iter(keys))
    value[first] = wrong(value[first])
    return value


def corrupted(task):
    """(actions, message): the gold play with one mistake τ² must catch. A write action gets a wrong
    argument; with no write, a required fact is left out; with neither, a write the task forbids is made
    (a gold write of another task of the domain)."""
    criteria = gold(task)
    name = task.verifier_metadata["domain"]
    tools = new_environment(name).tools
    actions = [copy.deepcopy(a) for a in criteria.actions or []]
    writes = [a for a in actions if tools.tool_type(a.name).value == "write"]
    if writes:
        writes[0].arguments = wrong(dict(writes[0].arguments))
        return actions, " ".join(criteria.communicate_info or [])
    if criteria.communicate_info:
        return actions, " ".join(criteria.communicate_info[1:])
    donor = next(a for t in domain(name)[2].values() for a in t.evaluation_criteria.actions or []
                 if tools.tool_type(a.name).value == "write")
    return [*actions, donor], ""


@pytest.fixture(scope="module")
def env():
    cfg = env_config()
    return EnvRuntime(Tau2Bench(**{k: v for k, v in cfg.config.items() if k not in ("user", "user_app")}))


def play(env, task, actions, message):
    """The agent's side of a conversation: each action as a tool call, then `message` and a stop."""

    async def go():
        sid = f"{task.task_id}-{id(actions)}"
        await env.seed_session(sid, task)
        for a in actions:
            await env.call_tool(sid, ToolCall(name=a.name, arguments=a.arguments))
        ended = await env.step(sid, f"{message} ###STOP###")
        assert ended.done
        result = await env.verify(sid, task, task.prompt)
        await env.close_session(sid)
        return result

    return asyncio.run(go())


def test_rows_are_taus_own_splits_with_the_domain_prompt_and_tools():
    def counts(split):
        rows = Tau2Bench(split=split).tasks("tau2_bench")
        return [sum(r.verifier_metadata["domain"] == d for r in rows) for d in ("airline", "retail", "telecom")]

    assert counts("test") == [20, 40, 40] and counts("train") == [30, 74, 74]
    airline = Tau2Bench(domains=["airline"]).tasks("tau2_bench", limit=1)[0]
    assert "<policy>" in airline.prompt[0].content and "# Airline Agent Policy" in airline.prompt[0].content
    assert airline.prompt[1].content == "Hi! How can I help you today?"
    assert "book_reservation" in {t.name for t in airline.tools}
    with pytest.raises(ValueError, match="config.split"):
        Tau2Bench(split="dev")


@pytest.mark.parametrize("task", sample_tasks(), ids=lambda t: t.task_id)
def test_gold_actions_score_one_and_a_corrupted_play_scores_zero(env, task):
    criteria = gold(task)
    ok = play(env, task, criteria.actions or [], " ".join(criteria.communicate_info or []))
    assert ok.error is None and ok.reward == 1.0, ok
    assert ok.info["db_match"] and ok.info["ended"] == "agent_stop"
    bad = play(env, task, *corrupted(task))
    assert bad.error is None and bad.reward == 0.0, bad
    assert not bad.info["db_match"] or bad.info["missed_communicate_info"]


def test_no_stop_scores_zero_as_in_tau2(env):
    task = sample_tasks()[0]

    async def go():
        await env.seed_session("nostop", task)
        for a in gold(task).actions:
            await env.call_tool("nostop", ToolCall(name=a.name, arguments=a.arguments))
        return await env.verify("nostop", task, task.prompt)

    result = asyncio.run(go())
    assert result.reward == 0.0 and "without a stop" in result.info["reason"]


def test_the_agent_talks_to_the_customer_and_ends_on_a_user_stop(default_model_path):
    """Tau2Agent end to end in process: the customer's opening, a question, the gold calls as hermes tool
    calls, the customer's answers from its scenario and its stop token; τ² grades the episode 1."""
    cfg = env_config()
    task = sample_tasks()[0]  # airline-2: gold writes, nothing to tell
    actions = gold(task).actions
    model = ModelConfig(kind="scripted", name="scripted", replies=["unused"], chat_template="chatml_tools")
    heard = []

    def customer(prompt_text: str, turn: int) -> str:
        heard.append(prompt_text)
        return "Thanks, that is all. " + USER_STOPS[0] if "anything else" in prompt_text else "I need a change."

    script = ["Sure, let me look at that.",
              *(f'<tool_call>{json.dumps({"name": a.name, "arguments": a.arguments})}</tool_call>' for a in actions),
              "Your request is done. Is there anything else?"]

    def agent(prompt_text: str, turn: int) -> str:
        return script.pop(0)

    server = Tau2Bench(client=ScriptClient(model, default_model_path, customer),
                       **{k: v for k, v in cfg.config.items() if k not in ("user", "user_app")})
    ctx = EpisodeContext(policy=ScriptClient(model, default_model_path, agent), env=EnvRuntime(server),
                         tokenizer=load_tokenizer(default_model_path, "chatml_tools"),
                         sampling=SamplingConfig(max_tokens=256), config=cfg.agent, rollout_id="r", group_id="g",
                         rollout_index=0, group_size=1, session_id="s")
    [row] = asyncio.run(Tau2Agent(cfg.agent).run(task, ctx))
    row.check_invariants()
    assert row.status == "ok", row.error
    assert row.reward == 1.0 and row.num_tool_calls == len(actions) and not row.truncated
    users = [m["content"] for m in json.loads(row.messages_json) if m["role"] == "user"]
    assert users == ["I need a change.", "I need a change."]  # the opening, the answer; then the stop
    assert json.loads(row.metrics_json)["verify_info"]["ended"] == "user_stop" and not script
    assert "<scenario>" in heard[0] and "Your user id is" in heard[0]  # τ²'s user prompt and the task's scenario


def telecom_play(default_model_path, task, actions):
    """A telecom conversation in process: the agent's gold calls through `call_tool`; for each of the
    customer's, the agent asks and a scripted customer makes the call on its device (a hermes tool call in
    its reply), then says it is done; the agent ends with a stop."""
    model = ModelConfig(kind="scripted", name="scripted", replies=["unused"], chat_template="chatml_tools")
    queue = []
    env = EnvRuntime(Tau2Bench(domains=["telecom"], client=ScriptClient(model, default_model_path,
                                                                        lambda text, turn: queue.pop(0))))

    async def go():
        await env.seed_session("t", task)
        for a in actions:
            if a.requestor == "assistant":
                await env.call_tool("t", ToolCall(name=a.name, arguments=a.arguments))
            else:
                queue.extend([f'<tool_call>{json.dumps({"name": a.name, "arguments": a.arguments})}</tool_call>',
                              "Done."])
                assert (await env.step("t", f"Please use {a.name} on your phone.")).observation == "Done."
        await env.step("t", "Glad it works now. ###STOP###")
        return await env.verify("t", task, task.prompt)

    result = asyncio.run(go())
    assert not queue
    return result


TELECOM = ["[mms_issue]airplane_mode_on|bad_wifi_calling|user_abroad_roaming_enabled_off[PERSONA:Easy]",
           "[mms_issue]airplane_mode_on|bad_network_preference|break_app_both_permissions|data_usage_exceeded|"
           "unseat_sim_card|user_abroad_roaming_disabled_on[PERSONA:Hard]"]


@pytest.mark.parametrize("tid", TELECOM, ids=["customer-only", "customer-and-agent"])
def test_telecom_gold_calls_of_agent_and_customer_score_one_and_a_missing_one_zero(default_model_path, tid):
    """Telecom grades the device and line by τ²'s env assertions (most gold calls are the customer's and take
    no argument): the gold calls fix them (1); without the last one the device stays broken (0)."""
    [task] = [t for t in Tau2Bench(domains=["telecom"], split="test").tasks("tau2_bench")
              if t.verifier_metadata["tau2_task_id"] == tid]
    actions = gold(task).actions
    ok = telecom_play(default_model_path, task, actions)
    assert ok.error is None and ok.reward == 1.0, ok
    bad = telecom_play(default_model_path, task, actions[:-1])
    assert bad.error is None and bad.reward == 0.0, bad
