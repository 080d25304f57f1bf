"""Real agent libraries against the gateway: the `openai` client and the OpenAI Agents SDK, driven by
ExternalAgent through the episode service, scored by the real weather env; rows checked token-exactly."""

from __future__ import annotations

import asyncio

import pytest
from gw_helpers import assert_token_exact, group, weather_setup


@pytest.mark.parametrize("program", ["openai_loop", "openai_agents_sdk", "openai_agents_sdk_streamed",
                                     "openai_agents_sdk_responses", "openai_agents_sdk_responses_streamed"])
def test_agent_library_rows_are_token_exact_and_scored(default_model_path, program):
    runner, tasks, policy = weather_setup(default_model_path, {"program": f"gw_helpers:{program}"})

    async def main():
        return [await runner.run(t, 0, group(t)) for t in tasks[:3]]

    results = asyncio.run(main())
    assert len(policy.calls) == 2 * len(results)
    for k, rows in enumerate(results):
        [row] = rows  # appending tool results keeps one linear segment
        assert row.status == "ok", row.error
        assert (row.reward, row.num_turns, row.num_tool_calls, row.truncated) == (1.0, 2, 1, False)
        assert dict(zip(row.reward_component_names, row.reward_component_values, strict=True)) == {
            "called_tool": 1.0, "condition": 1.0, "temperature": 1.0}
        assert row.gen_policy_versions == [3, 3] and row.policy_version == 3
        assert_token_exact(rows, policy.calls[2 * k: 2 * k + 2])
