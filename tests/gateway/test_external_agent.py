"""ExternalAgent's outcomes: a command-line agent scored by the env, and every way a program can fail
ending as a row with a status and a failure record (never a reward of 0 passed off as a score)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import gw_helpers
import pytest
from gw_helpers import assert_token_exact, group, weather_setup

CLI = str(Path(__file__).with_name("openai_cli_agent.py"))


def _run(runner, task):
    return asyncio.run(runner.run(task, 0, group(task)))


def test_command_line_agent_is_scored(default_model_path):
    runner, tasks, policy = weather_setup(default_model_path, {"command": [sys.executable, CLI]})
    [row] = _run(runner, tasks[2])
    assert row.status == "ok", row.error
    assert (row.reward, row.num_turns, row.num_tool_calls) == (1.0, 2, 1)
    assert_token_exact([row], policy.calls)
    assert "Oslo" in row.metrics_json  # the program's stdout is kept


def test_synchronous_program_runs_off_the_event_loop(default_model_path):
    runner, tasks, policy = weather_setup(default_model_path, {"program": "gw_helpers:sync_openai_loop"})
    [row] = _run(runner, tasks[0])
    # one call, and the model's reply is a tool call the program never ran: scored by the verifier as such
    assert row.status == "ok", row.error
    assert row.num_turns == 1 and row.num_tool_calls == 1 and row.reward == 0.0
    assert json.loads(row.metrics_json)["verify_info"] == {"reason": "no final answer"}
    assert_token_exact([row], policy.calls)


@pytest.mark.parametrize("case", ["timeout", "crash", "exit", "never_calls", "model_error"])
def test_program_failures_are_status_rows(default_model_path, case):
    kwargs = {
        "timeout": {"program": "gw_helpers:sleeps_forever", "timeout_s": 6},
        "crash": {"program": "gw_helpers:crashes"},
        "exit": {"command": [sys.executable, CLI], "env": {"AGENT_CRASH": "1"}},
        "never_calls": {"program": "gw_helpers:never_calls"},
        "model_error": {"program": "gw_helpers:openai_loop"},
    }[case]
    script = "gw_helpers:failing_script" if case == "model_error" else "gw_helpers:weather_script"
    runner, tasks, policy = weather_setup(default_model_path, kwargs, script=script)
    [row] = _run(runner, tasks[0])
    expected = {"timeout": ("timeout", "agent", "timeout"), "crash": ("aborted", "agent", "exception"),
                "exit": ("aborted", "agent", "exception"), "never_calls": ("aborted", "agent", "bad_output"),
                "model_error": ("model_error", "generate", "exception")}[case]
    assert (row.status, row.failure_stage, row.failure_kind) == expected, row.error
    assert row.mask_sample and row.reward == 0.0 and "verify_s" in row.metrics_json
    assert '"verify_info"' not in row.metrics_json  # never scored
    assert_token_exact([row], policy.calls)  # the calls made before the failure are kept exactly
    if case in ("timeout", "crash"):
        assert row.num_turns == 1 and len(row.response_token_ids) > 0
    if case == "crash":
        assert "KeyError" in row.error
    if case == "exit":
        assert "crashing on purpose" in row.error


def test_call_after_the_program_returned_is_refused(default_model_path):
    runner, tasks, policy = weather_setup(default_model_path, {"program": "gw_helpers:calls_after_return"})
    gw_helpers.LATE.clear()

    async def main():
        rows = await runner.run(tasks[0], 0, group(tasks[0]))
        await asyncio.gather(*gw_helpers.LATE_TASKS)
        return rows

    [row] = asyncio.run(main())
    assert row.num_turns == 1 and len(policy.calls) == 1
    [late] = gw_helpers.LATE
    assert getattr(late, "status_code", None) == 410


def test_command_line_agent_in_the_sandbox_reaches_only_the_gateway(default_model_path):
    """bubblewrap with a private network namespace: the program's only way out is the gateway's socket."""
    pytest.importorskip("gym_ray.sandbox")
    from gym_ray.gateway import get_gateway
    from gym_ray.sandbox import SandboxUnavailable

    async def main():
        gw = await get_gateway()
        try:
            runner, tasks, policy = weather_setup(default_model_path, {
                "command": ["/usr/bin/python3", "agent.py"], "sandbox": True, "timeout_s": 30,
                "files": {"agent.py": str(Path(__file__).with_name("stdlib_agent.py"))},
                "env": {"HOST_GATEWAY_PORT": str(gw.port)}})
        except SandboxUnavailable as e:
            pytest.skip(f"no sandbox here: {e}")
        return await runner.run(tasks[1], 0, group(tasks[1])), policy

    [row], policy = asyncio.run(main())
    assert row.status == "ok", row.error
    assert (row.reward, row.num_turns, row.num_tool_calls) == (1.0, 2, 1)
    assert_token_exact([row], policy.calls)
    output = json.loads(row.metrics_json)["program_output"]
    probes = json.loads(output.splitlines()[0])
    assert probes == {"host_gateway_port": False, "outside": False}


def test_token_budget_refusal_ends_truncated_and_scored(default_model_path):
    """A prompt at the episode's token limit answers 400 context_length_exceeded; the program fails on it,
    and the row is what gym_ray's own agent writes at its budget: ok, truncated, scored."""
    runner, tasks, _ = weather_setup(default_model_path, {"program": "gw_helpers:openai_loop"})
    [full] = _run(runner, tasks[0])
    second_prompt = len(full.prompt_token_ids) + full.gen_span_starts[1]
    runner, tasks, policy = weather_setup(default_model_path, {"program": "gw_helpers:openai_loop"},
                                          max_total_tokens=second_prompt)
    [row] = _run(runner, tasks[0])
    metrics = json.loads(row.metrics_json)
    assert (row.status, row.truncated, metrics["stop_reason"]) == ("ok", True, "token_budget")
    assert "Error code: 400" in metrics["program_error"] and "limit is" in metrics["program_error"]
    assert metrics["gateway"]["context_refusals"] == 1 and row.num_turns == 1 == len(policy.calls)
    assert metrics["verify_info"] == {"reason": "no final answer"} and row.reward == 0.0
    assert_token_exact([row], policy.calls)


def test_infrastructure_error_is_retried_with_a_fresh_session(default_model_path):
    """A lost policy replica answers the program 503 and makes the agent raise InfraError after it ends;
    the runner retries the episode with a fresh session, which succeeds and is the only row."""
    runner, tasks, flaky = weather_setup(default_model_path, {"program": "gw_helpers:openai_loop"},
                                         policy_cls=gw_helpers.FlakyPolicy)
    [row] = _run(runner, tasks[0])
    assert row.status == "ok" and row.reward == 1.0 and row.attempt == 1, row.error
    assert flaky.failed_sessions == [f"{row.rollout_id}.a0"] and flaky.sessions[-1] == f"{row.rollout_id}.a1"
    assert_token_exact([row], flaky.calls)
