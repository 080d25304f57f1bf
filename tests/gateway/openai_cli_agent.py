"""A command-line agent: a plain `openai` client loop configured only by OPENAI_BASE_URL / OPENAI_API_KEY
and the task on stdin, the way a third-party agent CLI is run. Uses the environment's tools over HTTP."""

import json
import os
import sys
import urllib.request

from openai import OpenAI


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main() -> None:
    task = json.loads(sys.stdin.read())
    if os.environ.get("AGENT_CRASH"):
        sys.exit("crashing on purpose")
    client = OpenAI(max_retries=0)  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
    tools_url = os.environ["GYM_RAY_TOOLS_URL"]
    with urllib.request.urlopen(tools_url, timeout=30) as r:
        tools = json.loads(r.read())
    messages = task["prompt"]
    for _ in range(6):
        r = client.chat.completions.create(model=os.environ["OPENAI_MODEL"], messages=messages, tools=tools)
        msg = r.choices[0].message
        messages.append(msg.model_dump(exclude_none=True))
        if not msg.tool_calls:
            print(msg.content)
            return
        for c in msg.tool_calls:
            out = post(f"{tools_url}/{c.function.name}", json.loads(c.function.arguments))["output"]
            messages.append({"role": "tool", "tool_call_id": c.id, "content": out})
    sys.exit("no final answer")


if __name__ == "__main__":
    main()
