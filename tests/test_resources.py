"""ResourceServer core, in-process: schemas, argument checks, sessions, expiry, verify, step, process pool."""

from __future__ import annotations

import asyncio
import math
import pickle
import random
import threading
import time

import pytest

from gym_ray.config import EnvConfig
from gym_ray.resources import EnvError, ResourceServer, StepResult, VerifyResult, tool
from gym_ray.resources.client import make_env_client
from gym_ray.resources.http_compat import parse_messages, parse_task, responses_output_to_messages
from gym_ray.resources.local import LocalEnvClient
from gym_ray.resources.pool import ProcessPool, ProcessTimeout
from gym_ray.resources.runtime import EnvRuntime, SessionLostError
from gym_ray.resources.sessions import SessionStore
from gym_ray.types import Message, Task, ToolCall


def task(**meta) -> Task:
    return Task(task_id="t", env="test", prompt=[Message(role="user", content="go")], verifier_metadata=meta)


def run(coro):
    return asyncio.run(coro)


class Notes(ResourceServer):
    """A stateful test server with a sync, an async, a blocking and a failing tool."""

    closed: list[str]

    def __init__(self) -> None:
        self.closed = []

    def seed(self, task):
        return {"notes": list(task.verifier_metadata.get("notes", []))}

    @tool
    def add(self, text: str, times: int = 1) -> str:
        """Add a note.

        Some longer explanation.

        Args:
            text: What to write down.
            times: How often.
        """
        self.state["notes"].extend([text] * times)
        return f"{len(self.state['notes'])} notes"

    @tool
    async def read(self) -> list[str]:
        """Read all notes."""
        await asyncio.sleep(0)
        return self.state["notes"]

    @tool(blocking=True, name="slow_count")
    def count(self) -> int:
        """Count notes in a worker thread."""
        return len(self.state["notes"])

    @tool
    def explode(self, why: str) -> str:
        """Always fails."""
        raise RuntimeError(f"boom: {why}")

    def verify(self, task, messages):
        return VerifyResult(
            reward=float(self.state["notes"] == task.verifier_metadata["expected"]),
            info={"thread": threading.current_thread().name},
        )

    def close(self):
        self.closed.append(self.session_id)


def test_schema_from_hints_and_docstring():
    specs = {s.name: s for s in run(EnvRuntime(Notes()).tools())}
    assert set(specs) == {"add", "read", "slow_count", "explode"}
    add = specs["add"]
    assert add.description == "Add a note.\n\nSome longer explanation."
    assert add.parameters["required"] == ["text"]
    assert add.parameters["properties"]["text"] == {"type": "string", "description": "What to write down."}
    assert add.parameters["properties"]["times"]["type"] == "integer"
    assert add.parameters["properties"]["times"]["default"] == 1
    assert add.parameters["additionalProperties"] is False
    assert "title" not in add.parameters
    assert specs["read"].parameters["properties"] == {}
    assert add.to_openai()["function"]["name"] == "add"


def test_bad_tool_definitions_fail_at_class_creation():
    with pytest.raises(TypeError, match=r"parameter 'city' needs a type hint"):

        class NoHint(ResourceServer):
            @tool
            def get(self, city) -> str:
                return city

    with pytest.raises(TypeError, match="reserved"):

        class Reserved(ResourceServer):
            @tool(name="verify")
            def check(self) -> str:
                return ""

    with pytest.raises(TypeError, match="blocking=True is for sync tools"):

        class AsyncBlocking(ResourceServer):
            @tool(blocking=True)
            async def get(self) -> str:
                return ""


def test_tools_validate_arguments_and_errors_come_back_as_text():
    rt = EnvRuntime(Notes())

    async def go():
        await rt.seed_session("a", task())
        ok = await rt.call_tool("a", ToolCall(name="add", arguments={"text": "x", "times": 2}))
        as_json = await rt.call_tool_raw("a", "add", '{"text": "y"}')
        missing = await rt.call_tool("a", ToolCall(name="add", arguments={}))
        wrong_type = await rt.call_tool("a", ToolCall(name="add", arguments={"text": "x", "times": "many"}))
        extra = await rt.call_tool("a", ToolCall(name="add", arguments={"text": "x", "color": "red"}))
        bad_json = await rt.call_tool_raw("a", "add", '{"text": ')
        not_object = await rt.call_tool_raw("a", "add", "[1, 2]")
        unknown = await rt.call_tool("a", ToolCall(name="fly"))
        raised = await rt.call_tool("a", ToolCall(name="explode", arguments={"why": "test"}))
        with pytest.raises(SessionLostError, match="no session 'nope'"):  # infrastructure: retried, not shown
            await rt.call_tool("nope", ToolCall(name="add", arguments={"text": "x"}))
        read = await rt.call_tool("a", ToolCall(name="read"))
        counted = await rt.call_tool("a", ToolCall(name="slow_count"))
        return (
            ok,
            as_json,
            missing,
            wrong_type,
            extra,
            bad_json,
            not_object,
            unknown,
            raised,
            read,
            counted,
        )

    (
        ok,
        as_json,
        missing,
        wrong_type,
        extra,
        bad_json,
        not_object,
        unknown,
        raised,
        read,
        counted,
    ) = run(go())
    assert ok == "2 notes" and as_json == "3 notes"
    assert missing == "Error: invalid arguments for add: text: Field required"
    assert wrong_type.startswith("Error: invalid arguments for add: times:")
    assert extra == "Error: invalid arguments for add: color: unexpected argument"
    assert bad_json.startswith("Error: invalid arguments for add: arguments are not valid JSON")
    assert not_object == "Error: invalid arguments for add: arguments must be a JSON object, got list"
    assert unknown == "Error: unknown tool 'fly'. Available tools: add, read, slow_count, explode."
    assert raised == "Error: explode failed: RuntimeError: boom: test"
    assert read == '["x", "x", "y"]'  # non-str results are JSON; failed calls changed nothing
    assert counted == "3"


def test_concurrent_sessions_are_isolated():
    rt = EnvRuntime(Notes())
    rng = random.Random(0)
    plans = {f"s{i}": [f"n{i}-{k}" for k in range(rng.randint(1, 6))] for i in range(200)}

    async def episode(sid: str, notes: list[str]) -> tuple[float, float]:
        await rt.seed_session(sid, task())
        for n in notes:
            await rt.call_tool(sid, ToolCall(name="add", arguments={"text": n}))
            await asyncio.sleep(rng.random() / 1000)
            await rt.call_tool(sid, ToolCall(name="explode", arguments={"why": sid}))
        right = await rt.verify(sid, task(expected=notes), [])
        wrong = await rt.verify(sid, task(expected=notes[:-1]), [])
        await rt.close_session(sid)
        return right.reward, wrong.reward

    async def go():
        return await asyncio.gather(*(episode(sid, notes) for sid, notes in plans.items()))

    assert run(go()) == [(1.0, 0.0)] * len(plans)
    assert len(rt.sessions) == 0
    assert sorted(rt.server.closed) == sorted(plans)


def test_reseeding_replaces_and_closes_and_seed_comes_from_task():
    rt = EnvRuntime(Notes())

    async def go():
        await rt.seed_session("a", task(notes=["first"]))
        await rt.seed_session("a", task(notes=["second"]))
        return await rt.call_tool("a", ToolCall(name="read"))

    assert run(go()) == '["second"]'
    assert rt.server.closed == ["a"]


def test_session_store_expires_idle_and_caps_count():
    now = [0.0]
    store = SessionStore(ttl_s=10, max_sessions=3, clock=lambda: now[0])
    from gym_ray.resources.server import Session

    for i in range(3):
        store.put(Session(id=f"s{i}", task=task()))
        now[0] += 1
    now[0] = 11.5
    assert store.get("s0") is not None  # touched: s0 is now the newest
    assert [s.id for s in store.expire()] == ["s1"]  # idle 10.5 s > 10; s2 (9.5 s) stays
    store.put(Session(id="s3", task=task()))
    store.put(Session(id="s4", task=task()))
    assert [s.id for s in store.expire()] == ["s2"]  # over the cap of 3: oldest goes
    assert {"s0", "s3", "s4"} == {sid for sid in ("s0", "s1", "s2", "s3", "s4") if sid in store}


def test_runtime_expires_abandoned_sessions_and_closes_them():
    class ShortLived(Notes):
        session_ttl_s = 0.05

    rt = EnvRuntime(ShortLived())

    async def go():
        for i in range(50):
            await rt.seed_session(f"old{i}", task())
        await asyncio.sleep(0.1)
        await rt.seed_session("new", task())
        with pytest.raises(SessionLostError) as lost:
            await rt.call_tool("old0", ToolCall(name="read"))
        return str(lost.value)

    out = run(go())
    assert len(rt.sessions) == 1
    assert sorted(rt.server.closed) == sorted(f"old{i}" for i in range(50))
    assert out.startswith("no session 'old0'") and "expired after" in out


def test_verify_paths():
    rt = EnvRuntime(Notes())

    class Broken(ResourceServer):
        def verify(self, task, messages):
            raise ValueError("judge unreachable")

    class NotFinite(ResourceServer):
        async def verify(self, task, messages):
            return math.nan

    class Stateless(ResourceServer):
        async def verify(self, task, messages):
            return messages[-1].content == task.verifier_metadata["answer"]

    async def go():
        await rt.seed_session("a", task())
        await rt.call_tool("a", ToolCall(name="add", arguments={"text": "x"}))
        good = await rt.verify("a", task(expected=["x"]), [])
        with pytest.raises(SessionLostError, match="no session 'missing'"):
            await rt.verify("missing", task(expected=["x"]), [])
        broken = await EnvRuntime(Broken()).verify("s", task(), [])
        nan = await EnvRuntime(NotFinite()).verify("s", task(), [])
        msgs = [Message(role="assistant", content="42")]
        stateless = await EnvRuntime(Stateless()).verify("never-seeded", task(answer="42"), msgs)
        return good, broken, nan, stateless

    good, broken, nan, stateless = run(go())
    assert good.reward == 1.0 and good.error is None
    assert good.info["thread"] != threading.main_thread().name  # sync verify ran off the event loop
    assert broken.error == "Broken: verify failed: ValueError: judge unreachable"
    assert nan.error and "non-finite" in nan.error
    assert stateless.reward == 1.0 and stateless.error is None


def test_score_sees_only_the_final_answer_and_is_skipped_without_one():
    class Echo(ResourceServer):
        calls: list[str] = []

        def score(self, task, answer):
            self.calls.append(answer)
            return VerifyResult(reward=float(answer == task.verifier_metadata["answer"]), info={"saw": answer})

    rt = EnvRuntime(Echo())
    said = [Message(role="assistant", content="41"), Message(role="user", content="again"),
            Message(role="assistant", content=" 42 ")]

    async def go():
        right = await rt.verify("s", task(answer="42"), said)
        silent = await rt.verify("s", task(answer="42"), [*said, Message(role="assistant", content="  ")])
        nothing = await rt.verify("s", task(answer="42"), [Message(role="user", content="go")])
        return right, silent, nothing

    right, silent, nothing = run(go())
    assert right.reward == 1.0 and right.info == {"saw": "42"}
    assert silent.reward == nothing.reward == 0.0 and silent.info == {"reason": "no final answer"}
    assert Echo.calls == ["42"]  # never called without an answer


def test_state_outside_a_call_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only available inside a tool"):
        _ = Notes().state


class Dice(ResourceServer):
    """Step-driven: guess the seeded die; reward per step, no verify (sum of step rewards)."""

    def reset(self, task):
        self.state = {"die": random.Random(task.verifier_metadata["seed"]).randint(1, 6), "tries": 0}
        return "Guess the die."

    def step(self, action):
        self.state["tries"] += 1
        if action == "explode":
            raise KeyError("bad")
        hit = action == str(self.state["die"])
        done = hit or self.state["tries"] == 3
        return StepResult(observation="yes" if hit else "no", reward=0.25, done=done, info={"hit": hit})


def test_step_driven_env():
    rt = EnvRuntime(Dice())
    die = random.Random(7).randint(1, 6)
    wrong = str(die % 6 + 1)

    async def go():
        assert await rt.reset("a", task(seed=7)) == "Guess the die."
        first = await rt.step("a", wrong)
        second = await rt.step("a", str(die))
        with pytest.raises(EnvError, match="step after the episode ended"):
            await rt.step("a", "1")
        result = await rt.verify("a", task(seed=7), [])
        with pytest.raises(EnvError, match="no session 'zzz'"):
            await rt.step("zzz", "1")
        await rt.reset("b", task(seed=7))
        with pytest.raises(EnvError, match="step failed: KeyError"):
            await rt.step("b", "explode")
        return first, second, result

    first, second, result = run(go())
    assert (first.done, second.done, second.observation) == (False, True, "yes")
    assert result.reward == 0.5 and result.info == {"hit": True, "steps": 2, "done": True}


def test_not_step_driven_and_no_verify_are_errors():
    class Plain(ResourceServer):
        pass

    rt = EnvRuntime(Plain())
    with pytest.raises(EnvError, match="is not step-driven"):
        run(rt.reset("a", task()))
    assert "does not implement verify() or score()" in run(rt.verify("a", task(), [])).error


def test_local_client_is_picklable_and_builds_from_config():
    cfg = EnvConfig(server="gym_ray_env_counter.server:Counter")
    client = make_env_client("counter", cfg)
    assert isinstance(client, LocalEnvClient)
    run(client.tools())  # built
    clone = pickle.loads(pickle.dumps(client))
    assert clone._runtime is None and clone.cfg == cfg
    with pytest.raises(ValueError, match="not a ResourceServer subclass"):
        EnvRuntime.from_config("x", EnvConfig(server="gym_ray.types:Task"))
    with pytest.raises(ValueError, match="cannot import module 'no_such_mod'"):
        EnvRuntime.from_config("x", EnvConfig(server="no_such_mod:X"))
    with pytest.raises(ValueError, match="expected an import path"):
        EnvRuntime.from_config("x", EnvConfig(server="gym_ray_env_counter.server.Counter"))
    with pytest.raises(ValueError, match=r"envs.x.config: Counter rejected its settings"):
        EnvRuntime.from_config(
            "x", EnvConfig(server="gym_ray_env_counter.server:Counter", config={"bad": 1})
        )


def test_nemo_gym_bodies_parse():
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "weather in sf?"}]},
        "verifier_metadata": {"city": "SF"},
        "session_id": "abc",
        "response": {
            "output": [
                {"type": "reasoning", "summary": []},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city": "SF"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "cold"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "It is cold."}],
                },
            ]
        },
    }
    t = parse_task(row, "weather")
    assert t.env == "weather" and t.verifier_metadata == {"city": "SF"}
    msgs = parse_messages(row, t)
    assert [m.role for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1].tool_calls[0].id == "c1" and msgs[1].tool_calls[0].arguments == {"city": "SF"}
    assert msgs[2].tool_call_id == "c1" and msgs[3].content == "It is cold."
    assert responses_output_to_messages([{"type": "function_call", "name": "f", "arguments": "{bad"}])[
        0
    ].tool_calls[0].arguments == {"_unparsed": "{bad"}
    with pytest.raises(ValueError, match="task_id"):
        parse_task({"task_id": " ", "prompt": "x"}, "weather")


# --- process pool -------------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


def test_process_pool_runs_times_out_and_recovers():
    pool = ProcessPool(max_workers=2)

    async def go():
        assert await pool.run(square, 7, timeout_s=60) == 49  # first call spawns the workers
        slow = asyncio.create_task(pool.run(spin, 0.5, timeout_s=60))
        await asyncio.sleep(0.05)
        with pytest.raises(ProcessTimeout, match="spin ran longer than 0.2 s"):
            await pool.run(spin, 30, timeout_s=0.2)
        # the in-flight call on the killed pool is retried once on a fresh one
        assert await slow == "done"
        assert await asyncio.gather(*(pool.run(square, i, timeout_s=60) for i in range(8))) == [
            i * i for i in range(8)
        ]

    t0 = time.monotonic()
    try:
        run(go())
    finally:
        pool.shutdown()
    assert time.monotonic() - t0 < 25  # the 30 s spin was killed, not waited for
