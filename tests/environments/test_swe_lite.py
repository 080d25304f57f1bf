"""swe_lite: a scripted engineer (list, run the tests, read, apply the fix, run again) scores 1.0 on every
repository, with the hidden tests; no edit, a wrong edit or a broken file scores 0; paths stay inside."""

from __future__ import annotations

import asyncio

from env_helpers import ToolSession, env_and_tasks

from gym_ray.types import Message, ToolCall


async def engineer(env, sid, task, fix=None):
    """The scripted policy: `fix` (path, old, new) or the task's reference fix; None-like: no edit."""
    await env.seed_session(sid, task)
    tools = ToolSession(env, sid, task)
    call, messages = tools.call, tools.messages

    listing = await call("list_files")
    before = await call("run", command="python3 -m unittest")
    ref = task.verifier_metadata["reference_fix"]
    source = await call("read_file", path=ref["path"])
    fix = ref if fix is None else fix
    edited = await call("edit_file", **fix) if fix else None
    after = await call("run", command="python3 -m unittest")
    messages.append(Message(role="assistant", content="Fixed the bug."))
    result = await env.verify(sid, task, messages)
    await env.close_session(sid)
    return {"listing": listing, "before": before, "source": source, "edited": edited, "after": after,
            "result": result}


def test_the_reference_fix_passes_visible_and_hidden_tests():
    env, tasks = env_and_tasks("swe_lite")
    assert len(tasks) == 8

    async def go():
        return await asyncio.gather(*(engineer(env, f"s{i}", t) for i, t in enumerate(tasks)))

    for t, ep in zip(tasks, asyncio.run(go()), strict=True):
        files = t.verifier_metadata["files"]
        assert ep["listing"].splitlines() == sorted(files)
        assert ep["before"].startswith("exit code 1") and "FAILED" in ep["before"]  # the bug shows
        assert ep["source"] == files[t.verifier_metadata["reference_fix"]["path"]]
        assert ep["after"].startswith("exit code 0 (ok)") and "OK" in ep["after"]
        result = ep["result"]
        assert result.reward == 1.0, (t.task_id, result.info)
        assert result.components == {"tests_passed": 1.0, "passed_fraction": 1.0, "edited": 1.0}
        assert result.info["tests_run"] == 2  # the visible test and the hidden one


def test_no_edit_a_wrong_edit_or_a_broken_file_scores_zero():
    env, tasks = env_and_tasks("swe_lite")
    task = tasks[0]  # stats.mean
    path = task.verifier_metadata["reference_fix"]["path"]

    async def go():
        return (await engineer(env, "none", task, fix={}),
                await engineer(env, "wrong", task, fix={"path": path, "old": "(len(xs) - 1)", "new": "(len(xs) + 1)"}),
                await engineer(env, "broken", task, fix={"path": path, "old": "return", "new": "retrun"}))

    none, wrong, broken = asyncio.run(go())
    assert none["result"].reward == 0.0 and none["result"].components["edited"] == 0.0
    assert wrong["result"].reward == 0.0 and wrong["result"].info["tests_failed"] >= 1
    assert broken["result"].reward == 0.0 and "unit tests" in broken["result"].info["reason"]


def test_tool_errors_and_the_sandbox_copy():
    env, tasks = env_and_tasks("swe_lite")
    task = tasks[0]

    async def go():
        await env.seed_session("t", task)
        out = [await env.call_tool("t", ToolCall(name="read_file", arguments={"path": "../etc/passwd"})),
               await env.call_tool("t", ToolCall(name="read_file", arguments={"path": "missing.py"})),
               await env.call_tool("t", ToolCall(name="edit_file", arguments={"path": "stats.py", "old": "zzz", "new": ""})),
               await env.call_tool("t", ToolCall(name="run", arguments={"command": "echo hi > stats.py; cat stats.py"})),
               await env.call_tool("t", ToolCall(name="read_file", arguments={"path": "stats.py"}))]
        await env.close_session("t")
        return out

    escape, missing, absent, ran, kept = asyncio.run(go())
    assert "inside the repository" in escape and escape.startswith("Error:")
    assert "no file 'missing.py'" in missing
    assert "occurs 0 times" in absent
    assert ran.startswith("exit code 0") and ran.rstrip().endswith("hi")
    assert kept == task.verifier_metadata["files"]["stats.py"]  # the command's change was not kept
