"""A reference black-box agent: the plain `openai` client tool loop most agent programs reduce to. It takes
the environment's tools from the gateway and runs them there. Use it to smoke-test an environment through
the gateway (`agent.kwargs.program: gym_ray.gateway.examples:openai_tool_loop`) or as a template."""

from __future__ import annotations

import json


async def openai_tool_loop(base_url: str, model: str, task, tools_url: str, max_calls: int = 8) -> str | None:
    import httpx
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="gym-ray", max_retries=0)
    async with httpx.AsyncClient(timeout=60) as http:
        tools = (await http.get(tools_url)).raise_for_status().json()
        messages = [m.to_openai() for m in task.prompt]
        for _ in range(max_calls):
            r = await client.chat.completions.create(model=model, messages=messages, tools=tools or None)
            msg = r.choices[0].message
            messages.append(msg.model_dump(exclude_none=True))
            if not msg.tool_calls:
                return msg.content
            for c in msg.tool_calls:
                try:
                    args = json.loads(c.function.arguments)
                except ValueError:
                    args = None
                if not isinstance(args, dict):
                    out = f"Error: arguments must be a JSON object, got {c.function.arguments!r}"
                else:
                    resp = await http.post(f"{tools_url}/{c.function.name}", json=args)
                    out = resp.json()["output"] if resp.status_code == 200 else resp.json()["error"]["message"]
                    if resp.status_code >= 500:
                        resp.raise_for_status()  # the environment failed: the episode is env_error
                messages.append({"role": "tool", "tool_call_id": c.id, "content": out})
    return None
