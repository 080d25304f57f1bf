"""Agent programs that attack the gateway or outlive their episode (`hostile_agent.py`): a session answers
only its own program, nothing is served after the episode, and a program starts with nothing of the actor's
but what it needs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import sys
from pathlib import Path

import pytest
from gw_helpers import group, weather_setup

HOSTILE = str(Path(__file__).with_name("hostile_agent.py"))


def _output(row) -> str:
    return json.loads(row.metrics_json)["program_output"]


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """Whether process `pid` (not our child) has ended within `timeout_s`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


def test_a_program_cannot_call_another_programs_session(default_model_path, tmp_path):
    """The thief reads the victim's OPENAI_BASE_URL from /proc/<pid>/environ while the victim's episode is
    open; its calls over the URL (and over the gateway's Unix socket) are refused and reach nothing."""
    from gym_ray.gateway import get_gateway

    fifos = {"READY": str(tmp_path / "ready"), "RELEASE": str(tmp_path / "release")}
    for path in fifos.values():
        os.mkfifo(path)

    async def main():  # one event loop: both episodes on the same gateway
        env = {**fifos, "GATEWAY_SOCKET": (await get_gateway()).uds_path}
        victim_runner, tasks, victim_policy = weather_setup(
            default_model_path, {"command": [sys.executable, HOSTILE, "victim"], "env": env, "timeout_s": 60})
        thief_runner, _, thief_policy = weather_setup(
            default_model_path, {"command": [sys.executable, HOSTILE, "steal"], "env": env, "timeout_s": 60})
        rows = await asyncio.gather(victim_runner.run(tasks[0], 0, group(tasks[0])), thief_runner.run(tasks[1], 0, group(tasks[1])))
        return rows, victim_policy, thief_policy

    (victim_rows, [thief]), victim_policy, thief_policy = asyncio.run(main())
    assert thief.status == "ok", thief.error
    report = json.loads(_output(thief))
    assert len(report["found"]) == 1, report  # it did read the victim's URL
    assert report["tcp"] and set(report["tcp"]) == {403}, report
    assert set(report["uds"]) == {403}, report
    assert len(victim_rows) == 1, "the thief's call was recorded in the victim's episode"
    assert victim_rows[0].status == "ok", victim_rows[0].error
    assert len(victim_policy.calls) == 1 == victim_rows[0].num_turns  # only the victim's own call generated
    assert len(thief_policy.calls) == 1 == thief.num_turns


def test_nothing_is_served_after_the_program_ends(default_model_path, tmp_path):
    """The program exits leaving a child in its process group and one in a session of its own holding its
    stdout: the episode ends at the exit, the group is killed, and the escaped child's calls answer 410."""
    files = {"PIDS": str(tmp_path / "pids.json"), "RESULT": str(tmp_path / "result.json")}
    runner, tasks, policy = weather_setup(
        default_model_path, {"command": [sys.executable, HOSTILE, "linger"], "env": files, "timeout_s": 10})
    pids: dict = {}

    async def main():  # the gateway serves while the late child calls
        [row] = await runner.run(tasks[0], 0, group(tasks[0]))
        pids.update(json.loads(Path(files["PIDS"]).read_text()))
        return row, await asyncio.to_thread(_wait_exit, pids["stay"], 10), \
            await asyncio.to_thread(_wait_exit, pids["late"], 30)

    try:
        row, stay_ended, late_ended = asyncio.run(main())
        assert row.status == "ok", row.error
        assert stay_ended, "the child in the program's process group outlived it"
        assert late_ended, "the escaped child never saw the episode end"
        assert json.loads(Path(files["RESULT"]).read_text()) == {"chat": 410, "tool": 410}
        assert len(policy.calls) == 1 == row.num_turns  # the late call never generated nor was recorded
        assert json.loads(row.metrics_json)["gateway"]["tool_calls_served"] == 0
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_command_inherits_no_descriptor_and_only_the_environment_it_needs(default_model_path, monkeypatch):
    """On uvloop (Ray's actor loop, which ignores close_fds) with an inheritable descriptor and a secret in the
    actor's environment: the program sees stdin/stdout/stderr only, and none of the actor's variables but the
    allowed ones."""
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.setenv("HOSTILE_PROBE_SECRET", "do-not-pass")
    runner, tasks, policy = weather_setup(
        default_model_path, {"command": [sys.executable, HOSTILE, "fds"], "env": {"MINE": "1"}})
    leak = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            [row] = r.run(runner.run(tasks[0], 0, group(tasks[0])))
    finally:
        os.close(leak)
    assert row.status == "ok", row.error
    seen = json.loads(_output(row))
    assert seen["fds"] == [0, 1, 2]
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
               "VIRTUAL_ENV", "PYTHONPATH", "MINE", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL",
               "GYM_RAY_TOOLS_URL", "GYM_RAY_TASK"}
    assert "MINE" in seen["env"] and "OPENAI_BASE_URL" in seen["env"]
    assert not {k for k in seen["env"] if not k.startswith("LC_")} - allowed, seen["env"]
