"""A scripted policy that plays three of NeMo Gym's own resources servers through gym_ray's agent.

Each reply depends on what NeMo Gym's server answered earlier in the episode (the counter's session
state, the synonym values it computes), so a reward of 1.0 from NeMo Gym's verifier shows that the tool
calls, their outputs and the session cookies all went through.
"""

from __future__ import annotations

import json
import re

_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
_TOOL_JSON = re.compile(r"<tool_response>\s*(\{.*?\})\s*</tool_response>", re.S)
_SYNONYMS = re.compile(r'You need to get synonym values for "([^"]+)" and "([^"]+)"')


def _tool_outputs(prompt_text: str) -> list[dict]:
    return [json.loads(m) for m in _TOOL_JSON.findall(prompt_text)]


def reply(prompt_text: str, turn: int):
    if "increment_counter" in prompt_text:  # example_session_state_mgmt: "add 1 then add 2 then get the count"
        adds = [int(n) for n in re.findall(r"add (\d+)", _USER.findall(prompt_text)[0])]
        if turn < len(adds):
            return {"name": "increment_counter", "arguments": {"count": adds[turn]}}
        if turn == len(adds):
            return {"name": "get_counter_value", "arguments": {}}
        return f"The count is {_tool_outputs(prompt_text)[-1]['count']}."
    if "get_synonym_value" in prompt_text:  # example_multi_step: look both synonyms up, then extract
        names = _SYNONYMS.search(prompt_text).groups()
        if turn < len(names):
            return {"name": "get_synonym_value", "arguments": {"synonym": names[turn]}}
        if turn == len(names):
            values = [out["synonym_value"] for out in _tool_outputs(prompt_text)]
            return {"name": "extract_synonym_values", "arguments": {"synonym_values": values}}
        return "Done."
    if turn == 0:  # example_single_tool_call
        return {"name": "get_weather", "arguments": {"city": "San Francisco"}}
    return _tool_outputs(prompt_text)[-1]["weather_description"]
