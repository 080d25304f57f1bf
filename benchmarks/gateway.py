"""What the token-capturing gateway costs per model call, against calling the policy directly.

Every path plays the same multi-turn conversations (a user message appended per turn, so each call after
the first takes the gateway's delta path) against the same scripted policy:
  direct     the agent's own token path: `Transcript` delta + `PolicyClient.generate` + record
  session    the gateway's bookkeeping without HTTP (`GatewaySession.chat_completion`)
  httpx      the gateway over loopback HTTP, raw JSON with httpx
  openai     the gateway through the official `openai` AsyncOpenAI client (what agent programs pay)
  stream     the same with `stream=True` (SSE chunks)
The client runs in the gateway's own process and event loop (as a callable agent program does), so its
CPU counts too. `--policy serve` puts the scripted policy behind a Serve handle (gRPC transport), the
path of a real run; `local` (default) runs it in-process, so the table shows the gateway's cost alone.

    .venv/bin/python benchmarks/gateway.py [--episodes 32] [--turns 8] [--concurrency 1 16] [--policy local]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time


def build(policy_kind: str):
    from gym_ray.agents.base import load_tokenizer
    from gym_ray.config import ModelConfig
    from gym_ray.models import make_policy_client
    from gym_ray.models.default_model import prepare_default_model

    path = str(prepare_default_model())
    cfg = ModelConfig(kind="scripted", name="scripted", replies=["Sure, here is a short answer."],
                      hosting="local" if policy_kind == "local" else "serve", tokenizer=path)
    if policy_kind == "serve":
        import socket

        import ray
        from ray import serve

        from gym_ray.models import deploy_policy

        with socket.socket() as sk:  # a free port for Serve's (unused) HTTP proxy
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        # a private cluster: never attach to someone else's on a shared machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy_policy(cfg, "scripted")
    return make_policy_client(cfg, "scripted"), load_tokenizer(path, "chatml_tools")


def _episode(chat, policy):
    from gym_ray.agents.base import EpisodeContext
    from gym_ray.agents.episode import Episode
    from gym_ray.config import AgentConfig, SamplingConfig
    from gym_ray.types import Message, Task

    task = Task(task_id="t", env="bench", prompt=[Message(role="system", content="You are terse."),
                                                  Message(role="user", content="Question 0?")])
    ctx = EpisodeContext(policy=policy, env=None, tokenizer=chat, sampling=SamplingConfig(max_tokens=64),
                         config=AgentConfig(max_total_tokens=100_000), rollout_id="r", group_id="g",
                         rollout_index=0, group_size=1, session_id="s")
    return Episode(task, ctx)


async def run_path(path: str, chat, policy, gw, episodes: int, turns: int, concurrency: int):
    """Per-call latencies (s) and wall time of `episodes` x `turns` calls, `concurrency` episodes at once."""
    import httpx
    from openai import AsyncOpenAI

    from gym_ray.types import Message

    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=256))
    oa_http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=256))

    async def one(i: int) -> None:
        async with sem:
            ep = _episode(chat, policy)
            msgs = [m.to_openai() for m in ep.task.prompt]
            if path == "direct":
                ep.start(chat.prompt_ids(ep.task.prompt))
                for t in range(turns):
                    t0 = time.perf_counter()
                    if t:
                        await ep.append([Message(role="user", content=f"Question {t}?")])
                    await ep.generate()
                    lat.append(time.perf_counter() - t0)
                return
            s = gw.open(ep, "scripted")
            base = gw.base_url(s)
            client = AsyncOpenAI(base_url=base, api_key="x", max_retries=0, http_client=oa_http)
            for t in range(turns):
                if t:
                    msgs.append({"role": "user", "content": f"Question {t}?"})
                body = {"model": "scripted", "messages": msgs}
                t0 = time.perf_counter()
                if path == "session":
                    resp, _, _ = await s.chat_completion(body)
                    reply = resp["choices"][0]["message"]
                elif path == "httpx":
                    r = await http.post(base + "/chat/completions", json=body)
                    reply = r.raise_for_status().json()["choices"][0]["message"]
                elif path == "openai":
                    r = await client.chat.completions.create(model="scripted", messages=msgs)
                    reply = {"role": "assistant", "content": r.choices[0].message.content}
                else:
                    content = ""
                    async for c in await client.chat.completions.create(model="scripted", messages=msgs,
                                                                        stream=True):
                        content += (c.choices[0].delta.content or "") if c.choices else ""
                    reply = {"role": "assistant", "content": content}
                lat.append(time.perf_counter() - t0)
                msgs.append(reply)
            gw.close(s)
            assert len(ep.transcript.segments) == 1, "the conversation must stay one segment"

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(episodes)))
    wall = time.perf_counter() - t0
    await http.aclose()
    await oa_http.aclose()
    return lat, wall


async def main_async(args) -> None:
    from gym_ray.gateway import get_gateway

    policy, chat = build(args.policy)
    gw = await get_gateway()
    paths = ["direct", "session", "httpx", "openai", "stream"]
    # warm-up: tokenizer caches, connection pools, the Serve handle
    for p in paths:
        await run_path(p, chat, policy, gw, 2, 2, 2)
    print(f"policy: scripted ({args.policy}); {args.episodes} episodes x {args.turns} turns per path; "
          "latency per call, wall = all calls at that concurrency")
    print()
    print("| concurrency | path | calls | p50 ms | mean ms | calls/s | overhead vs direct, ms/call (p50) |")
    print("|---|---|---|---|---|---|---|")
    for c in args.concurrency:
        base = None
        for p in paths:
            best = None
            for _ in range(args.rounds):
                lat, wall = await run_path(p, chat, policy, gw, args.episodes, args.turns, c)
                if best is None or wall < best[1]:
                    best = (lat, wall)
            lat, wall = best
            p50 = statistics.median(lat) * 1e3
            base = p50 if p == "direct" else base
            over = "" if p == "direct" else f"{p50 - base:+.2f}"
            print(f"| {c} | {p} | {len(lat)} | {p50:.2f} | {statistics.fmean(lat) * 1e3:.2f} | "
                  f"{len(lat) / wall:.0f} | {over} |")
    await gw.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--rounds", type=int, default=2, help="runs per path and concurrency (fastest kept)")
    p.add_argument("--policy", choices=["local", "serve"], default="local")
    args = p.parse_args()
    try:
        asyncio.run(main_async(args))
    finally:
        import ray

        if args.policy == "serve" and ray.is_initialized():
            from ray import serve

            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
