"""Agent programs that misbehave (stdlib only), run as ExternalAgent commands; each first makes one call of
its own so its episode is a normal one. `python hostile_agent.py MODE`:

- victim: signals the fifo $READY, then waits on the fifo $RELEASE (its session stays open meanwhile).
- steal: waits for $READY, reads the other agent programs' OPENAI_BASE_URL from /proc/<pid>/environ, calls
  their sessions over the URL's TCP port and over the gateway's Unix socket ($GATEWAY_SOCKET), releases the victim and
  prints {"found": [...], "tcp": [status...], "uds": [status...]}.
- linger: starts a child in its own process group (`stay`, blocks) and one in a session of its own
  (`late`), writes both pids to $PIDS and exits at once.
- late: waits until the reader of its stdout is gone (the episode is over), then calls chat and a tool and
  writes their statuses to $RESULT.
- fds: prints {"fds": [its open descriptors], "env": [its environment's names]}.
"""

import glob
import json
import os
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request

ASK = {"model": "m", "messages": [{"role": "user", "content": "What is the weather in Oslo?"}]}


def call(url: str, body: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def call_unix(path: str, target: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with s:
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: gateway\r\n\r\n".encode())
        return int(s.makefile("rb").readline().split()[1])


def own_call() -> int:
    return call(os.environ["OPENAI_BASE_URL"] + "/chat/completions", ASK)


def other_urls() -> list[str]:
    own, found = os.environ["OPENAI_BASE_URL"], []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            env = open(path, "rb").read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"OPENAI_BASE_URL="):
                url = item.split(b"=", 1)[1].decode()
                if url != own and url not in found:
                    found.append(url)
    return found


def steal() -> None:
    with open(os.environ["READY"]) as f:
        f.read()
    found = other_urls()
    tcp, uds = [], []
    for url in found:
        tools = url.removesuffix("/v1") + "/tools"
        tcp += [call(url + "/chat/completions", ASK), call(url + "/models"), call(tools),
                call(tools + "/get_weather", {"city": "Oslo"})]
        target = "/" + url.split("/", 3)[3] + "/models"
        uds.append(call_unix(os.environ["GATEWAY_SOCKET"], target))
    with open(os.environ["RELEASE"], "w") as f:
        f.write("done")
    own_call()
    print(json.dumps({"found": found, "tcp": tcp, "uds": uds}))


def victim() -> None:
    own_call()
    with open(os.environ["READY"], "w") as f:
        f.write("ready")
    with open(os.environ["RELEASE"]) as f:
        f.read()
    print("released")


def linger() -> None:
    own_call()
    stay = subprocess.Popen([sys.executable, __file__, "stay"])
    late = subprocess.Popen([sys.executable, __file__, "late"], start_new_session=True)
    with open(os.environ["PIDS"], "w") as f:
        json.dump({"stay": stay.pid, "late": late.pid}, f)
    print("leaving")


def late() -> None:
    poll = select.poll()
    poll.register(sys.stdout.fileno(), 0)  # reports POLLERR once nobody reads the pipe any more
    if not poll.poll(60_000):
        sys.exit("the episode's end never came")
    base = os.environ["OPENAI_BASE_URL"]
    codes = {"chat": call(base + "/chat/completions", ASK),
             "tool": call(os.environ["GYM_RAY_TOOLS_URL"] + "/get_weather", {"city": "Oslo"})}
    with open(os.environ["RESULT"], "w") as f:
        json.dump(codes, f)


def fds() -> None:
    own_call()
    listed = os.listdir("/proc/self/fd")  # holds one descriptor of its own while it reads: gone after
    fds = sorted(int(n) for n in listed if os.path.lexists(f"/proc/self/fd/{n}"))
    print(json.dumps({"fds": fds, "env": sorted(os.environ)}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "stay":
        r, _w = os.pipe()
        os.read(r, 1)  # it holds the write end itself: blocks until killed
    else:
        {"steal": steal, "victim": victim, "linger": linger, "late": late, "fds": fds}[mode]()
