"""mcp_units: the tools come from an MCP server (`mcp_server.py`, started by gym_ray over stdio); the
verifier is this env's own: the final answer must state the conversion the tool returned."""

from __future__ import annotations

import re

from gym_ray_env_mcp_units.mcp_server import convert_value

from gym_ray import VerifyResult, final_answer, tool_results
from gym_ray.integrations.mcp import MCPEnv

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in _NUMBER.findall(text)]


def close_to(x: float, expected: float) -> bool:
    return abs(x - expected) <= max(1e-4, 1e-3 * abs(expected))


class UnitsEnv(MCPEnv):
    verifier = "the env's own: the tool's value in the answer"
    origin = "MCP (`mcp` SDK server over stdio)"
    metric = "accuracy"

    def verify(self, task, messages):
        meta = task.verifier_metadata
        expected = convert_value(float(meta["value"]), meta["from_unit"], meta["to_unit"])
        answer = final_answer(messages)
        if answer is None:
            return VerifyResult(reward=0.0, info={"reason": "no final answer"})
        called = any(f"= {expected:g} {meta['to_unit']}" in r for r in tool_results(messages, "convert"))
        components = {"called_tool": float(called),
                      "value": float(any(close_to(x, expected) for x in numbers(answer)))}
        return VerifyResult(reward=min(components.values()), components=components,
                            info={"expected": expected})
