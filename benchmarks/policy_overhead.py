"""What hosting costs: the same prompts and sampling through
  (a) our Serve path by handle (`make_policy_client(...).generate`, gRPC handle transport),
  (b) our OpenAI HTTP endpoint (`/v1/completions` with token-id prompts, `return_token_ids`),
  (c) the vLLM engine directly (`AsyncLLM` in a plain Ray actor, same engine settings and environment),
and prints generated tokens/s for each with the ratios (a)/(c), (b)/(c). Greedy sampling, so all three
generate the very same tokens. Goal: >= 0.9 on CPU, >= 0.95 on a GPU.

A second table gives the per-call cost of the scripted policy (what load tests and the orchestration
benchmark pay per generation) through a default handle, the gRPC handle and HTTP.

    .venv/bin/python benchmarks/policy_overhead.py [--prompts 64] [--max-tokens 64] [--concurrency 16]
    .venv/bin/python benchmarks/policy_overhead.py --scripted-only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "What is 12 times 7?",
    "Write a haiku about the sea.", "Why is the sky blue?", "List the planets of the solar system.",
    "What does a compiler do?", "Give me a synonym for happy.",
]


def chat_prompts(tokenizer_path: str, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (question {i})"}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


async def bounded(n: int, fn, items) -> list:
    sem = asyncio.Semaphore(n)

    async def one(x):
        async with sem:
            return await fn(x)

    return await asyncio.gather(*(one(x) for x in items))


def direct_engine(cfg):
    """(c): AsyncLLM in a plain zero-CPU Ray actor with the engine arguments and environment that our
    defaults give the Serve replica (Ray sets OMP_NUM_THREADS in its workers: compare like with like)."""
    import ray

    from gym_ray.models.vllm_server import llm_config_for

    llm = llm_config_for(cfg)

    @ray.remote(num_cpus=0, runtime_env=llm.runtime_env)
    class DirectEngine:
        def __init__(self, model_path, engine_kwargs):
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model_path, **engine_kwargs))
            self.counter = iter(range(10**9))

        async def run(self, prompts, max_tokens, concurrency):
            from vllm import SamplingParams
            from vllm.sampling_params import RequestOutputKind

            from gym_ray.models.vllm_server import engine_input

            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=0,
                                    output_kind=RequestOutputKind.FINAL_ONLY)

            async def gen(p):
                final = None
                async for out in self.engine.generate(engine_input(p), params, f"r{next(self.counter)}"):
                    final = out
                return len(final.outputs[0].token_ids)

            await gen(prompts[0])
            start = time.perf_counter()
            tokens = sum(await bounded(concurrency, gen, prompts))
            return time.perf_counter() - start, tokens

    return DirectEngine.remote(llm.model_loading_config.model_source, llm.engine_kwargs)


def make_caller():
    import ray

    @ray.remote(num_cpus=0)
    class Caller:
        """Calls from inside a Ray actor, as agents do."""

        async def handle(self, client, prompts, sampling, concurrency):
            async def gen(p):
                return len((await client.generate(p, sampling)).token_ids)

            await gen(prompts[0])
            start = time.perf_counter()
            tokens = sum(await bounded(concurrency, gen, prompts))
            return time.perf_counter() - start, tokens

        async def raw_handle(self, app, deployment, prompts, sampling, concurrency, grpc):
            from ray import serve

            from gym_ray import compat

            h = serve.get_deployment_handle(deployment, app)
            h = compat.with_transport(h, by_reference=False) if grpc else h
            s = sampling.model_dump()

            async def gen(p):
                return len((await h.generate.remote(p, s))["token_ids"])

            await gen(prompts[0])
            start = time.perf_counter()
            tokens = sum(await bounded(concurrency, gen, prompts))
            return time.perf_counter() - start, tokens

        async def http(self, base_url, model, prompts, sampling, concurrency):
            import httpx

            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as c:
                async def gen(p):
                    r = await c.post("/completions", json={
                        "model": model, "prompt": p, "max_tokens": sampling.max_tokens,
                        "temperature": sampling.temperature, "logprobs": 1, "return_token_ids": True})
                    r.raise_for_status()
                    return len(r.json()["choices"][0]["token_ids"])

                await gen(prompts[0])
                start = time.perf_counter()
                tokens = sum(await bounded(concurrency, gen, prompts))
                return time.perf_counter() - start, tokens

    return Caller.remote()


def start_ray_serve():
    import ray
    from ray import serve

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=int(os.environ.get("BENCH_NUM_CPUS", "2")), include_dashboard=False,
             log_to_driver=False)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})


def scripted_table(calls: int, concurrency: int) -> None:
    import ray

    from gym_ray.config import ModelConfig, SamplingConfig
    from gym_ray.models.client import make_policy_client
    from gym_ray.models.deploy import delete_policy, deploy_policy

    cfg = ModelConfig(kind="scripted", name="scripted", replies=[
        {"name": "get_weather", "arguments": {"city": "Paris"}}, "It is sunny in Paris today."])
    ep = deploy_policy(cfg, "bench_scripted", route_prefix="/bench_scripted")
    prompts = chat_prompts(ep.tokenizer_path, 64) * (calls // 64)
    sampling = SamplingConfig(max_tokens=64)
    caller = make_caller()
    rows = [
        ("handle, default transport", caller.raw_handle.remote("bench_scripted", ep.deployment, prompts,
                                                               sampling, concurrency, False)),
        ("handle, gRPC (_by_reference=False)", caller.raw_handle.remote("bench_scripted", ep.deployment,
                                                                        prompts, sampling, concurrency, True)),
        (f"PolicyClient.generate (handle_transport={cfg.handle_transport})", caller.handle.remote(make_policy_client(cfg, "bench_scripted"),
                                                                      prompts, sampling, concurrency)),
        ("HTTP /v1/completions (httpx)", caller.http.remote(ep.base_url, cfg.name, prompts, sampling,
                                                            concurrency)),
    ]
    print(f"\nscripted policy: {len(prompts)} calls, {concurrency} in flight, caller in a Ray actor")
    print("| path | calls/s | ms/call (wall/calls) |\n|---|---|---|")
    for name, ref in rows:
        elapsed, _ = ray.get(ref)
        print(f"| {name} | {len(prompts) / elapsed:,.0f} | {1000 * elapsed / len(prompts):.2f} |")
    ray.kill(caller)
    delete_policy("bench_scripted")


def vllm_table(n_prompts: int, max_tokens: int, concurrency: int, rounds: int) -> None:
    """The three paths interleaved for `rounds` rounds, best of each: shared VMs drift in speed over
    minutes, and one pass per path in sequence would measure the drift as much as the path."""
    import ray

    from gym_ray.config import ModelConfig, SamplingConfig
    from gym_ray.models.client import make_policy_client
    from gym_ray.models.default_model import resolve_model_path
    from gym_ray.models.deploy import delete_policy, deploy_policy

    prompts = chat_prompts(resolve_model_path(None), n_prompts)
    cfg = ModelConfig(kind="vllm", name="smol", max_ongoing_requests=max(64, concurrency))
    start_ray_serve()
    direct = direct_engine(cfg)
    ep = deploy_policy(cfg, "bench_vllm", route_prefix="/bench_vllm")
    sampling = SamplingConfig(temperature=0.0, max_tokens=max_tokens)
    caller = make_caller()
    client = make_policy_client(cfg, "bench_vllm")
    paths = {
        "(c) vLLM AsyncLLM direct": lambda: direct.run.remote(prompts, max_tokens, concurrency),
        "(a) Serve handle (PolicyClient)": lambda: caller.handle.remote(client, prompts, sampling, concurrency),
        "(b) Serve HTTP /v1/completions": lambda: caller.http.remote(ep.base_url, cfg.name, prompts, sampling,
                                                                    concurrency),
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, start in paths.items():
            runs[name].append(ray.get(start()))
    ray.kill(caller)
    ray.kill(direct)
    delete_policy("bench_vllm")

    best = {name: max(r, key=lambda et: et[1] / et[0]) for name, r in runs.items()}
    base_elapsed, base_tokens = best["(c) vLLM AsyncLLM direct"]
    base = base_tokens / base_elapsed
    print(f"\nvLLM ({'GPU' if ray.cluster_resources().get('GPU') else 'CPU'}): {n_prompts} prompts, greedy, "
          f"max_tokens={max_tokens}, {concurrency} in flight, best of {rounds} interleaved rounds")
    print("| path | tokens | seconds | tokens/s | ratio to (c) | every round, tokens/s |\n|---|---|---|---|---|---|")
    for name in sorted(best):
        elapsed, tokens = best[name]
        every = ", ".join(f"{t / e:.1f}" for e, t in runs[name])
        print(f"| {name} | {tokens} | {elapsed:.2f} | {tokens / elapsed:.1f} | {tokens / elapsed / base:.3f} | {every} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three vLLM paths (best kept)")
    p.add_argument("--scripted-only", action="store_true")
    p.add_argument("--scripted-calls", type=int, default=2048)
    p.add_argument("--scripted-concurrency", type=int, default=256)
    args = p.parse_args()
    import ray
    from ray import serve

    try:
        if not args.scripted_only:
            vllm_table(args.prompts, args.max_tokens, args.concurrency, args.rounds)
        else:
            start_ray_serve()
        scripted_table(args.scripted_calls, args.scripted_concurrency)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
