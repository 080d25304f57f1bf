"""The instant model of `nemogym_baseline.py`: an OpenAI Responses endpoint (`POST /v1/responses`) for
NeMo Gym's `openai_model` server. It stands in for the LLM only, as `weather_script.py` does for gym_ray:
the first turn calls `get_weather`, the next answers with what the tool said.

    python benchmarks/instant_responses.py PORT
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()
_ids = itertools.count()


def _response(model: str, item: dict) -> dict:
    return {"id": f"resp_{next(_ids)}", "object": "response", "created_at": time.time(), "model": model,
            "output": [item], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "status": "completed"}


@app.get("/")
async def ready() -> dict:
    return {"ok": True}


@app.post("/v1/responses")
async def responses(request: Request) -> dict:
    body = await request.json()
    items = body["input"] if isinstance(body["input"], list) else []
    n = next(_ids)
    outputs = [i["output"] for i in items if i.get("type") == "function_call_output"]
    if outputs:
        return _response(body["model"], {
            "type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": f"Here it is: {outputs[-1]}", "annotations": []}]})
    return _response(body["model"], {
        "type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "status": "completed",
        "name": "get_weather", "arguments": json.dumps({"city": "San Francisco"})})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
