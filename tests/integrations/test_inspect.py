"""Inspect AI tasks under gym_ray, with the real `inspect_ai` package: tasks written here with Inspect's own
classes (a dataset of Samples, `use_tools` with an `@tool`, `generate()`, `multiple_choice()`, and the built-in
`match()`, `includes()`, `choice()` and `model_graded_qa()` scorers), run by name through the `inspect`
adapter. Each scripted episode's reward is checked against what Inspect's own `eval()` scores for the same
model outputs (its `mockllm` model replaying them); the unmappable parts are refused in one line."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
import ray
from inspect_ai import Task, eval, task
from inspect_ai.agent import Agent, AgentState, agent, handoff, react
from inspect_ai.dataset import Sample
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import choice, includes, match, model_graded_qa
from inspect_ai.solver import generate, multiple_choice, system_message, use_tools
from inspect_ai.tool import ToolError, tool

from gym_ray.config import EnvConfig
from gym_ray.integrations.inspect import InspectEnv
from gym_ray.resources.client import make_env_client
from gym_ray.types import Message, ToolCall

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

HERE = Path(__file__).resolve()
_NUMBERS = re.compile(r"What is (\d+) \+ (\d+)\?")
_RESPONSE = re.compile(r"<tool_response>\n(\d+)\n</tool_response>")


@tool
def add():
    async def execute(x: int, y: int) -> str:
        """Add two whole numbers.

        Args:
            x: The first number.
            y: The second number.
        """
        if x < 0 or y < 0:
            raise ToolError("only non-negative numbers")
        return str(x + y)

    return execute


@task
def arithmetic() -> Task:
    return Task(dataset=[Sample(input=f"What is {a} + {b}? Use the add tool.", target=str(a + b), id=f"s{i}")
                         for i, (a, b) in enumerate([(17, 25), (3, 4), (120, 5), (9, 9)])],
                solver=[system_message("Answer with the number only."), use_tools(add()), generate()],
                scorer=match())


@task
def capitals() -> Task:
    return Task(dataset=[Sample(input="What is the capital of France?", target="Paris"),
                         Sample(input="What is the capital of Japan?", target="Tokyo")],
                solver=generate(), scorer=includes())


@task
def quiz() -> Task:
    return Task(dataset=[Sample(input="Which planet is largest?", choices=["Mars", "Jupiter", "Venus"], target="B"),
                         Sample(input="Which is a prime?", choices=["4", "6", "7"], target="C")],
                solver=multiple_choice(), scorer=choice())


@task
def graded() -> Task:
    return Task(dataset=[Sample(input="Name a primary colour.", target="red")], solver=generate(),
                scorer=model_graded_qa())


def _arithmetic_answer(sample: Sample, right: bool) -> tuple[dict, str]:
    a, b = map(int, _NUMBERS.search(sample.input).groups())
    return {"x": a, "y": b}, f"The answer is {a + b if right else a + b + 1}"


def _inspect_scores(tasks: list[Task], outputs: list[ModelOutput], tmp_path: Path) -> list[dict]:
    """Inspect's own eval of `tasks` (one sample at a time) with mockllm replaying `outputs`: each sample's scores."""
    for o in outputs:
        o.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tokenizer download
    model = get_model("mockllm/model", custom_outputs=outputs)
    logs = eval(tasks, model=model, log_dir=str(tmp_path / "inspect_logs"), display="none", max_tasks=1,
                max_samples=1, score_display=False)
    assert all(log.status == "success" for log in logs), [log.error for log in logs]
    return [{name: s.value for name, s in sample.scores.items()} for log in logs for sample in log.samples]


def _play(env, sid: str, row, tool_args: dict | None, answer: str):
    """One scripted episode through the env client: an optional `add` call, then `answer`."""

    async def go():
        await env.seed_session(sid, row)
        messages = [*row.prompt]
        if tool_args is not None:
            call = ToolCall(name="add", arguments=tool_args)
            out = await env.call_tool(sid, call)
            messages += [Message(role="assistant", tool_calls=[call]),
                         Message(role="tool", tool_call_id=call.id, name="add", content=out)]
        result = await env.verify(sid, row, [*messages, Message(role="assistant", content=answer)])
        await env.close_session(sid)
        return result

    return asyncio.run(go())


def _client(name: str, **config):
    return make_env_client(name, EnvConfig.model_validate({"server": f"inspect:test_inspect:{name}",
                                                           "config": config}))


def test_rows_carry_the_solvers_prompt_tools_and_sample():
    env = InspectEnv("test_inspect:arithmetic")
    rows = env.tasks("arith")
    assert [r.task_id for r in rows] == ["arithmetic-s0", "arithmetic-s1", "arithmetic-s2", "arithmetic-s3"]
    assert [(m.role, m.content) for m in rows[0].prompt] == [
        ("system", "Answer with the number only."), ("user", "What is 17 + 25? Use the add tool.")]
    (spec,) = rows[0].tools  # use_tools(add()), its schema from Inspect's ToolDef
    assert spec.name == "add" and spec.description == "Add two whole numbers."
    assert spec.parameters["properties"]["x"] == {"type": "integer", "description": "The first number."}
    assert spec.parameters["required"] == ["x", "y"]
    assert rows[0].verifier_metadata["inspect"]["target"] == "42"

    mc = InspectEnv("test_inspect:quiz").tasks("quiz", limit=1)
    assert len(mc) == 1 and mc[0].tools is None
    assert "A) Mars\nB) Jupiter\nC) Venus" in mc[0].prompt[-1].content  # multiple_choice()'s own template
    assert mc[0].verifier_metadata["inspect"]["choices"] == ["Mars", "Jupiter", "Venus"]


def test_scripted_episodes_score_as_inspects_own_eval(tmp_path):
    tasks = {name: InspectEnv(f"test_inspect:{name}").tasks(name) for name in ("arithmetic", "capitals", "quiz")}
    arith_samples = list(arithmetic().dataset)
    plays, outputs = [], []  # (env name, row, tool args, answer, right?) and the same as mockllm outputs
    for i, (row, sample) in enumerate(zip(tasks["arithmetic"], arith_samples, strict=True)):
        args, answer = _arithmetic_answer(sample, right=i % 2 == 0)
        plays.append(("arithmetic", row, args, answer, i % 2 == 0))
        outputs += [ModelOutput.for_tool_call("mockllm/model", "add", args),
                    ModelOutput.from_content("mockllm/model", answer)]
    for row, answer, right in zip(tasks["capitals"], ["It is Paris.", "It is Kyoto."], [True, False], strict=True):
        plays.append(("capitals", row, None, answer, right))
        outputs.append(ModelOutput.from_content("mockllm/model", answer))
    for row, answer, right in zip(tasks["quiz"], ["ANSWER: B", "ANSWER: A"], [True, False], strict=True):
        plays.append(("quiz", row, None, answer, right))
        outputs.append(ModelOutput.from_content("mockllm/model", answer))

    clients = {name: _client(name) for name in tasks}
    results = [_play(clients[name], f"{name}-{i}", row, args, answer)
               for i, (name, row, args, answer, _) in enumerate(plays)]
    inspect_scores = _inspect_scores([arithmetic(), capitals(), quiz()], outputs, tmp_path)

    scorer = {"arithmetic": "match", "capitals": "includes", "quiz": "choice"}
    for (name, row, _, answer, right), result, theirs in zip(plays, results, inspect_scores, strict=True):
        assert result.error is None, result.error
        assert result.reward == (1.0 if right else 0.0), (row.task_id, answer)
        assert theirs == {scorer[name]: "C" if right else "I"}, (row.task_id, theirs)  # Inspect's own verdict
        assert result.components == {scorer[name]: result.reward}
        assert result.info["scores"][scorer[name]]["value"] == theirs[scorer[name]]


def test_samples_shipped_in_inspect_evals_score_as_its_eval(tmp_path):
    """inspect_evals' AgentThreatBench memory-poison task (its JSON data ships in the package): tools that
    read the sample's store, a dict-valued scorer (utility, security), three samples right, hijacked, right."""
    from inspect_ai import task_with
    from inspect_evals.agent_threat_bench import agent_threat_bench_memory_poison

    spec = "inspect_evals.agent_threat_bench:agent_threat_bench_memory_poison"
    rows = InspectEnv(spec).tasks("atb", limit=3)
    env = make_env_client("atb", EnvConfig.model_validate({"server": f"inspect:{spec}"}))
    assert {s.name for s in rows[0].tools} == {"memory_read", "memory_write"}
    plays, outputs = [], []
    for i, row in enumerate(rows):
        meta = row.verifier_metadata["inspect"]["metadata"]
        key = next(k for k, v in meta["memory_store"].items() if meta["expected_answer"].lower() in v.lower())
        answer = f"Per the knowledge base: {meta['expected_answer']}." if i != 1 else meta["attack_marker"]
        plays.append((row, {"key": key}, answer))
        outputs += [ModelOutput.for_tool_call("mockllm/model", "memory_read", {"key": key}),
                    ModelOutput.from_content("mockllm/model", answer)]

    async def go(row, args, answer):
        session = f"atb-{row.task_id}"
        await env.seed_session(session, row)
        call = ToolCall(name="memory_read", arguments=args)
        out = await env.call_tool(session, call)
        messages = [*row.prompt, Message(role="assistant", tool_calls=[call]),
                    Message(role="tool", tool_call_id=call.id, name=call.name, content=out),
                    Message(role="assistant", content=answer)]
        return out, await env.verify(session, row, messages)

    results = [asyncio.run(go(*p)) for p in plays]
    task = agent_threat_bench_memory_poison()
    theirs = _inspect_scores([task_with(task, dataset=task.dataset[:3])], outputs, tmp_path)
    for (row, _, _), (out, result), score in zip(plays, results, theirs, strict=True):
        meta = row.verifier_metadata["inspect"]["metadata"]
        assert meta["expected_answer"].lower() in out.lower()  # memory_read read the store the solver filled
        (value,) = score.values()
        assert result.error is None and result.info["scores"]["agent_threat_bench_scorer"]["value"] == value
        assert result.components == {"agent_threat_bench_scorer": result.reward,
                                     **{f"agent_threat_bench_scorer/{k}": float(v == "C") for k, v in value.items()}}
    assert [r.reward for _, r in results] == [1.0, 0.0, 1.0]


def test_tool_errors_read_as_inspect_shows_them():
    env = _client("arithmetic")
    row = InspectEnv("test_inspect:arithmetic").tasks("arithmetic", limit=1)[0]

    async def go():
        await env.seed_session("t", row)
        outs = [await env.call_tool("t", ToolCall(name="add", arguments=args))
                for args in ({"x": 2, "y": 3}, {"x": -1, "y": 3}, {"x": "two"})]
        outs.append(await env.call_tool("t", ToolCall(name="subtract", arguments={})))
        await env.close_session("t")
        return outs

    ok, refused, bad, unknown = asyncio.run(go())
    assert ok == "5"
    assert refused == "Error: only non-negative numbers"  # the tool's ToolError, as Inspect shows it
    assert bad.startswith("Error: Found 2 validation errors parsing tool input arguments")
    assert unknown == "Error: unknown tool 'subtract'. Available tools: add."


def test_no_final_answer_scores_as_inspect_scores_an_empty_output():
    env = _client("capitals")
    row = InspectEnv("test_inspect:capitals").tasks("capitals", limit=1)[0]

    async def go():
        await env.seed_session("e", row)
        return await env.verify("e", row, [*row.prompt])

    result = asyncio.run(go())
    assert result.error is None and result.reward == 0.0
    assert result.info["scores"]["includes"]["value"] == "I"


@task
def twice() -> Task:
    return Task(dataset=[Sample(input="Say hi.", target="hi")], solver=[generate(), generate()], scorer=match())


def test_a_solver_that_generates_twice_is_a_verify_error_not_a_reward():
    (row,) = InspectEnv("test_inspect:twice").tasks("twice")
    result = _play(_client("twice"), "t", row, None, "hi")
    assert result.error == "twice: the solver calls generate() more than once (e.g. self_critique()): gym_ray's " \
                           "episode is one generate()"


def test_model_graded_scorer_is_refused_without_a_grader_and_runs_with_one():
    with pytest.raises(ValueError, match=r"^config.task: task 'graded': scorer inspect_ai/model_graded_qa grades "
                                         r"with a model: set config.grader_model"):
        InspectEnv("test_inspect:graded")
    verdicts = [ModelOutput.from_content("mockllm/model", f"The answer names a colour.\nGRADE: {g}") for g in "CI"]
    for v in verdicts:
        v.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    grader = {"grader_model": "mockllm/model", "grader_args": {"custom_outputs": verdicts}}
    env = _client("graded", **grader)
    (row,) = InspectEnv("test_inspect:graded", **grader).tasks("graded")
    right, wrong = (_play(env, sid, row, None, "red") for sid in ("g1", "g2"))  # the grader's two verdicts
    assert right.error is None and right.reward == 1.0 and wrong.reward == 0.0
    assert right.info["scores"]["model_graded_qa"]["explanation"].endswith("GRADE: C")


@agent(description="Another agent to hand the conversation to.")
def helper() -> Agent:
    async def execute(state: AgentState) -> AgentState:
        return state

    return execute


@pytest.mark.parametrize("make, why", [
    (lambda: Task(dataset=[Sample(input="hi", target="x")], solver=generate(), scorer=match(), sandbox="docker"),
     r"task '\w+' runs in an Inspect sandbox \(docker\)"),
    (lambda: Task(dataset=[Sample(input="hi", target="x", files={"a.txt": "hello"})], solver=generate(),
                  scorer=match()),
     r"sample 1 needs an Inspect sandbox"),
    (lambda: Task(dataset=[Sample(input="hi", target="x")], solver=react(tools=[add()]), scorer=match()),
     r"solver failed before generate\(\) .*agent solvers \(react\(\), multi-agent\)"),
    (lambda: Task(dataset=[Sample(input="hi", target="x")], solver=[use_tools(handoff(helper())), generate()],
                  scorer=match()),
     r"hands off to other agents \(handoff\(\)\): gym_ray plays one agent"),
], ids=["task-sandbox", "sample-files", "react-agent", "handoff"])
def test_what_cannot_map_is_refused_in_one_line(monkeypatch, make, why):
    monkeypatch.setattr(sys.modules[__name__], "unmappable", make, raising=False)
    with pytest.raises(ValueError, match=f"^config.task: .*{why}") as refused:
        InspectEnv("test_inspect:unmappable").tasks("u")
    assert "\n" not in str(refused.value)


@task
def two_scorers() -> Task:
    return Task(dataset=[Sample(input="How many apples are in the bowl?", target="4")], solver=generate(),
                scorer=[match(), includes()])


def test_every_scorer_is_a_component_and_reward_scorer_picks_the_reward():
    (row,) = InspectEnv("test_inspect:two_scorers").tasks("two")
    first = _play(_client("two_scorers"), "a", row, None, "4 apples")
    picked = _play(_client("two_scorers", reward_scorer="includes"), "b", row, None, "4 apples")
    assert first.components == picked.components == {"match": 0.0, "includes": 1.0}  # match() reads the end
    assert (first.reward, picked.reward) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"^config.reward_scorer: 'exact' is not one of the task's scorers "
                                         r"\['match', 'includes'\]$"):
        InspectEnv("test_inspect:two_scorers", reward_scorer="exact")


def test_a_refusal_is_the_runs_one_line_task_error(tmp_path):
    from gym_ray.collect.api import load_run_tasks
    from gym_ray.config import load_config
    from gym_ray.tasks import TaskLoadError

    config = tmp_path / "graded.yaml"
    config.write_text('envs:\n  g:\n    server: "inspect:test_inspect:graded"\n')
    with pytest.raises(TaskLoadError, match=r"^envs.g: its own tasks: config.task: task 'graded': scorer "
                                            r"inspect_ai/model_graded_qa grades with a model"):
        load_run_tasks(load_config(config))


def test_a_name_that_does_not_load_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"config.task: 'no_such_module:t': module 'no_such_module' is not installed"):
        InspectEnv("no_such_module:t")
    with pytest.raises(ValueError, match=r"config.task: 'test_inspect:add' returned"):
        InspectEnv("test_inspect:add")


def arithmetic_reply(prompt_text: str, turn: int):
    """Turn 0: call add with the question's numbers; then state what the tool returned."""
    if turn == 0:
        a, b = _NUMBERS.findall(prompt_text)[-1]
        return {"name": "add", "arguments": {"x": int(a), "y": int(b)}}
    return "The answer is " + _RESPONSE.findall(prompt_text)[-1]


def test_an_inspect_task_on_ray_into_parquet_with_its_scorers_rewards(ray_cluster, tmp_path):
    import fault_helpers  # imported here: Ray's workers load this file by path, without tests/ on sys.path

    ray.cloudpickle.register_pickle_by_value(fault_helpers)
    config = tmp_path / "inspect.yaml"
    config.write_text(f"""envs:
  arith:
    server: "inspect:{HERE}@arithmetic"
    hosting: local
    agent: {{cls: "gym_ray.agents.tool_calling:ToolCallingAgent", max_turns: 4}}
collect: {{output_dir: {tmp_path / "out"}, num_repeats: 2, sampling: {{max_tokens: 64}}}}
""")
    summary, rows = fault_helpers.scripted_collect(config, arithmetic_reply, tmp_path / "run")
    assert summary["overall"]["rollouts"] == len(rows) == 8
    for r in rows:
        r.check_invariants()
        assert r.status.value == "ok", r.error
        assert r.reward == 1.0 and r.num_tool_calls == 1
        assert dict(zip(r.reward_component_names, r.reward_component_values, strict=True)) == {"match": 1.0}
