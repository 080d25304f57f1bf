"""An agent CLI for the sandbox (system python, stdlib only): a chat loop over OPENAI_BASE_URL with the env's
tools, after probing that nothing but the gateway is reachable. Prints a JSON report, then the answer."""

import json
import os
import socket
import sys
import urllib.request


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def main() -> None:
    task = json.loads(sys.stdin.read())
    probes = {"host_gateway_port": reachable("127.0.0.1", int(os.environ["HOST_GATEWAY_PORT"])),
              "outside": reachable("1.1.1.1", 80)}
    base, tools_url = os.environ["OPENAI_BASE_URL"], os.environ["GYM_RAY_TOOLS_URL"]
    with urllib.request.urlopen(tools_url, timeout=30) as r:
        tools = json.loads(r.read())
    messages = task["prompt"]
    for _ in range(6):
        msg = post(f"{base}/chat/completions", {"model": os.environ["OPENAI_MODEL"], "messages": messages,
                                                "tools": tools})["choices"][0]["message"]
        messages.append(msg)
        if not msg.get("tool_calls"):
            print(json.dumps(probes))
            print(msg["content"])
            return
        for c in msg["tool_calls"]:
            out = post(f"{tools_url}/{c['function']['name']}", json.loads(c["function"]["arguments"]))["output"]
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": out})
    sys.exit("no final answer")


if __name__ == "__main__":
    main()
