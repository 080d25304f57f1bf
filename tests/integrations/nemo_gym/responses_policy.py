"""A scripted OpenAI Responses-API endpoint (`POST /v1/responses`) for NeMo Gym's openai_model.

It stands in for the policy only (not for any NeMo Gym part): asked about a city, it calls gym_ray's
`get_weather` tool, then answers with what the tool said, so every episode is one gym_ray can score 1.0.
Run: python responses_policy.py PORT
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import time

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()
_ids = itertools.count()
_CITY = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*")
_FORECAST = re.compile(r"The weather in (?P<city>.+) is (?P<condition>\w+), (?P<temp>-?\d+) °C\.")


def _text(content) -> str:
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])


def _response(body: dict, item: dict) -> dict:
    return {"id": f"resp_{next(_ids)}", "object": "response", "created_at": time.time(), "model": body["model"],
            "output": [item], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "status": "completed"}


@app.post("/v1/responses")
async def responses(request: Request) -> dict:
    body = await request.json()
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    n = next(_ids)
    if outputs:
        m = _FORECAST.search(outputs[-1]["output"])
        text = f"In {m['city']} it is {m['condition']}, {m['temp']} °C." if m else "I could not tell."
        return _response(body, {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": text, "annotations": []}]})
    question = next(_text(i.get("content")) for i in reversed(items) if i.get("role") == "user")
    city = _CITY.findall(question)[-1]  # the last capitalised name: "... in San Francisco today?"
    return _response(body, {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "status": "completed",
                            "name": "get_weather", "arguments": json.dumps({"city": city})})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
