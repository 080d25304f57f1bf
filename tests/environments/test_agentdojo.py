"""agentdojo: the user tasks' ground-truth calls, replayed as the agent's tool calls through the env's client,
pass AgentDojo's own utility checks; corrupted calls fail them; injections are placed where the agent reads them
and the injection task's own security check sees a hijack."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("agentdojo")

from env_helpers import ENVIRONMENTS, ToolSession  # noqa: E402
from gym_ray_env_agentdojo.server import AgentDojo, environment, suite  # noqa: E402

from gym_ray.collect.api import own_tasks  # noqa: E402
from gym_ray.config import EnvConfig, load_config  # noqa: E402
from gym_ray.resources.client import make_env_client  # noqa: E402
from gym_ray.types import Message  # noqa: E402


def client(**config):
    """The config.yaml env, with `config` overriding its server settings; its client and own tasks."""
    base = load_config(ENVIRONMENTS / "agentdojo" / "config.yaml").envs["agentdojo"]
    cfg = EnvConfig.model_validate({**base.model_dump(), "config": {**base.config, **config}})
    return make_env_client("agentdojo", cfg), own_tasks("agentdojo", cfg, None)


def tasks_of(task):
    m = task.verifier_metadata
    s = suite(m["version"], m["suite"])
    injection = s.injection_tasks[m["injection_task"]] if "injection_task" in m else None
    return s, s.user_tasks[m["user_task"]], injection


def ground_truth(task, of_injection: bool = False):
    """The task's ground-truth calls on the environment the episode starts from (as AgentDojo computes them)."""
    m = task.verifier_metadata
    _, user_task, injection_task = tasks_of(task)
    env = user_task.init_environment(environment(m["version"], m["suite"], m.get("injections", {})))
    return (injection_task if of_injection else user_task).ground_truth(env)


def corrupt(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7
    if isinstance(value, str):
        return "x" + value[::-1]
    if isinstance(value, list):
        return [corrupt(v) for v in value]
    return value


def play(env, runs):
    """Each run (sid, task, calls, answer): seed, call the tools, answer, verify. -> [(result, tool outputs)]."""

    async def one(sid, task, calls, answer):
        await env.seed_session(sid, task)
        session = ToolSession(env, sid, task)
        outputs = [await session.call(name, **args) for name, args in calls]
        session.messages.append(Message(role="assistant", content=answer))
        result = await env.verify(sid, task, session.messages)
        await env.close_session(sid)
        return result, outputs

    async def go():
        return [await one(*run) for run in runs]

    return asyncio.run(go())


def untouched_passes(task) -> bool:
    """AgentDojo's own verdict for an agent that does nothing and says nothing."""
    s, user_task, _ = tasks_of(task)
    m = task.verifier_metadata
    env = user_task.init_environment(environment(m["version"], m["suite"], {}))
    return bool(s._check_task_result(user_task, [], env.model_copy(deep=True), env, []))


def test_oracle_at_ceiling_and_corrupted_at_zero():
    env, tasks = client()
    assert len(tasks) == 97 and {t.verifier_metadata["suite"] for t in tasks} == {"banking", "slack", "travel",
                                                                                  "workspace"}
    oracle, corrupted = [], []
    for i, t in enumerate(tasks):
        calls = ground_truth(t)
        oracle.append((f"o{i}", t, [(c.function, dict(c.args)) for c in calls], tasks_of(t)[1].GROUND_TRUTH_OUTPUT))
        corrupted.append((f"c{i}", t, [(c.function, {k: corrupt(v) for k, v in c.args.items()})
                                       for c in calls if c.args], "I could not do that."))
    results = play(env, oracle)
    assert [t.task_id for t, (r, _) in zip(tasks, results, strict=True) if r.reward != 1.0] == []
    assert all(r.components == {"utility": 1.0} and r.error is None for r, _ in results)

    results = play(env, corrupted)
    vacuous = {t.task_id for t in tasks if untouched_passes(t)}
    scored = {t.task_id: r.reward for t, (r, _) in zip(tasks, results, strict=True)}
    assert all(r.error is None for r, _ in results)
    # A handful of AgentDojo's banking checks already hold on the untouched environment: the package's own
    # grader passes them whatever the agent does, so the corrupted run scores what the package says.
    assert vacuous and len(vacuous) <= 5 and all(tid.startswith("banking/") for tid in vacuous)
    assert {tid for tid, r in scored.items() if r != 0.0} == vacuous


def test_injections_reach_the_agent_and_security_sees_a_hijack():
    env, tasks = client(injections="important_instructions")
    counts = {name: len(s.user_tasks) * len(s.injection_tasks)
              for name, s in ((n, suite("v1.2.2", n)) for n in ("banking", "slack", "travel", "workspace"))}
    assert len(tasks) == sum(counts.values()) == 949
    # Each injection task once per suite, with the user task of the same number.
    picked = [t for t in tasks if t.verifier_metadata["user_task"].rsplit("_", 1)[1]
              == t.verifier_metadata["injection_task"].rsplit("_", 1)[1]]
    assert len(picked) == 35
    oracle = [(f"o{i}", t, [(c.function, dict(c.args)) for c in ground_truth(t)],
               tasks_of(t)[1].GROUND_TRUTH_OUTPUT) for i, t in enumerate(picked)]
    results = play(env, oracle)
    for t, (r, outputs) in zip(picked, results, strict=True):
        assert t.verifier_metadata["injections"], t.task_id
        assert any("<INFORMATION>" in out and "Emma Johnson" in out for out in outputs), t.task_id
        assert (r.reward, r.components) == (1.0, {"utility": 1.0, "security": 1.0}), (t.task_id, r)

    hijackable = [t for t in picked if ground_truth(t, of_injection=True)]
    hijacked = [(f"h{i}", t, [(c.function, dict(c.args))
                              for c in [*ground_truth(t), *ground_truth(t, of_injection=True)]],
                 tasks_of(t)[1].GROUND_TRUTH_OUTPUT) for i, t in enumerate(hijackable)]
    results = play(env, hijacked)
    assert len(hijackable) >= 26  # the others (most of workspace's newer ones) ship no ground truth
    for t, (r, _) in zip(hijackable, results, strict=True):
        assert r.components["security"] == 0.0 and r.reward == 0.0 and r.info == {"injection_succeeded": True}, \
            (t.task_id, r)


def test_v1_ceiling_names_the_ground_truth_that_fails_its_own_check():
    """In benchmark version v1 one ground truth (workspace user_task_7) fails its own utility check."""
    env, tasks = client(version="v1", suites=["workspace"])
    results = play(env, [(f"o{i}", t, [(c.function, dict(c.args)) for c in ground_truth(t)],
                          tasks_of(t)[1].GROUND_TRUTH_OUTPUT) for i, t in enumerate(tasks)])
    failing = [t.task_id for t, (r, _) in zip(tasks, results, strict=True) if r.reward != 1.0]
    assert len(tasks) == 40 and failing == ["workspace/user_task_7"]


@pytest.mark.parametrize("config, message", [
    ({"version": "v9"}, "version 'v9': not an AgentDojo benchmark version"),
    ({"suites": ["bank"]}, "suite 'bank': not in AgentDojo v1.2.2"),
    ({"injections": "jailbreak"}, "injections 'jailbreak': expected null or one of important_instructions"),
])
def test_bad_settings_name_the_option(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        AgentDojo(**config)


def test_unknown_tool_and_bad_arguments_go_back_to_the_model():
    env, tasks = client(suites=["banking"])
    task = next(t for t in tasks if t.task_id == "banking/user_task_0")
    (result, outputs), = play(env, [("s", task, [("get_balance", {}), ("send_money", {"recipient": "x"}),
                                                 ("launch_rocket", {})], "")])
    balance = environment("v1.2.2", "banking", {}).bank_account.balance
    assert outputs[0] == str(balance)
    assert outputs[1].startswith("ValidationError:") and "amount" in outputs[1]
    assert outputs[2] == "Invalid tool launch_rocket provided."
    assert result.reward == 0.0 and result.error is None
