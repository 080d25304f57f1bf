"""Tree rollouts against independent rollouts on the embedded vLLM (CPU), for the same number of scored leaves.

    .venv/bin/python benchmarks/tree.py                                   # weather, 6 tasks, width 4, depth 1
    .venv/bin/python benchmarks/tree.py --config environments/counter/config.yaml --width 2 --depth 2
    .venv/bin/python benchmarks/tree.py --config environments/wordle/config.yaml --limit 4   # a reset/step game

Each task is one group of `width^depth` rollouts: independent episodes, or one tree that branches at its first
`depth` model calls after the first (`collect.tree.at: assistant_turn`), with the env's own agent (tool calls,
or env steps for reset/step games). Both run in this process on one
vLLM `AsyncLLM` engine (SmolLM2-135M-Instruct, float32, prefix caching on) and the environment in-process;
the prefix cache is emptied before each mode. Printed per mode: scored leaves (rows), generated tokens,
wall seconds, the prefix-cache hit rate from vLLM's own Prometheus counters (`vllm:prefix_cache_hits` /
`vllm:prefix_cache_queries`, in prompt tokens), and the share of groups whose rewards differ (GRPO signal).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "environments" / "weather" / "config.yaml"


class EnginePolicy:
    """vLLM's AsyncLLM as a PolicyClient: token ids in, the engine's ids and logprobs out; counts tokens."""

    def __init__(self, engine, model_name: str):
        self.engine = engine
        self.model_name = model_name
        self.generated = 0
        self.calls = 0

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from gym_ray.clients import Generation
        from gym_ray.models.vllm_server import engine_input

        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                max_tokens=sampling.max_tokens, seed=sampling.seed, stop=sampling.stop or None,
                                logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for out in self.engine.generate(engine_input(list(prompt_token_ids)), params, uuid.uuid4().hex):
            final = out
        c = final.outputs[0]
        ids = list(c.token_ids)
        self.generated += len(ids)
        self.calls += 1
        return Generation(token_ids=ids, logprobs=[lp[t].logprob for t, lp in zip(ids, c.logprobs, strict=True)],
                          finish_reason=c.finish_reason or "abort", model=self.model_name, text=c.text)


def prefix_cache_counters() -> tuple[float, float]:
    """(hits, queries) in tokens, summed over engines, from vLLM's Prometheus counters in this process."""
    from prometheus_client import REGISTRY

    samples = [s for m in REGISTRY.collect() for s in m.samples]
    total = {}
    for key in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
        found = [s.value for s in samples if s.name == key]
        if not found:
            raise RuntimeError(f"vLLM exports no {key}: is its stat logging off?")
        total[key] = sum(found)
    return total["vllm:prefix_cache_hits_total"], total["vllm:prefix_cache_queries_total"]


async def run_mode(name, engine, policy, cfg, tasks, tree, chat, concurrency) -> dict:
    from gym_ray.episodes import EnvSpec, EpisodeService, Group
    from gym_ray.resources.local import LocalEnvClient

    env_name = tasks[0].env
    env_cfg = cfg.envs[env_name].model_copy(update={"hosting": "local"})
    service = EpisodeService({env_name: EnvSpec(config=env_cfg, client=LocalEnvClient(env_name, env_cfg))}, policy,
                             tokenizer=chat, sampling=cfg.collect.sampling,
                             tree=tree if name == "tree" else None, concurrency=concurrency,
                             episode_timeout_s=3600.0)  # a loaded CPU engine is slow: measure, do not time out
    await engine.reset_prefix_cache()
    policy.generated = policy.calls = 0
    hits0, queries0 = prefix_cache_counters()
    t0 = time.monotonic()
    groups = await asyncio.gather(*(service.run_group(t, Group(f"{name}-{t.task_id}", group_size=tree.leaves))
                                    for t in tasks))
    wall = time.monotonic() - t0
    hits, queries = prefix_cache_counters()
    rows = [r for g in groups for r in g if r.segment_index == r.num_segments - 1]
    scored = [r for r in rows if not r.mask_sample]
    signal = sum(len({r.reward for r in g if not r.mask_sample}) > 1 for g in groups)
    failed = Counter(r.status for r in rows if r.mask_sample)
    return {"mode": name, "leaves": len(scored), "failed": dict(failed), "calls": policy.calls,
            "generated": policy.generated, "wall_s": wall, "hit_rate": (hits - hits0) / max(1.0, queries - queries0),
            "queries": queries - queries0, "signal": signal / len(groups),
            "mean_reward": sum(r.reward for r in scored) / max(1, len(scored))}


def table(results: list[dict]) -> str:
    header = ["mode", "scored leaves", "failed", "model calls", "gen tokens", "gen tok/leaf", "wall s",
              "prefix-cache hit", "prompt tok queried", "groups w/ signal", "mean reward"]
    lines = [header]
    for r in results:
        lines.append([r["mode"], str(r["leaves"]),
                      " ".join(f"{k}:{v}" for k, v in sorted(r["failed"].items())) or "0", str(r["calls"]), str(r["generated"]),
                      f"{r['generated'] / max(1, r['leaves']):.1f}", f"{r['wall_s']:.1f}", f"{r['hit_rate']:.1%}",
                      str(int(r["queries"])), f"{r['signal']:.0%}", f"{r['mean_reward']:.3f}"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="gym_ray run config of one environment")
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--at", default="assistant_turn", choices=["assistant_turn", "tool_call", "token_entropy"])
    p.add_argument("--limit", type=int, default=None, help="first N tasks of the environment's data")
    p.add_argument("--concurrency", type=int, default=64, help="episodes (or trees) in flight")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args()

    from gym_ray.models.offline import cpu_engine_env

    for k, v in cpu_engine_env().items():
        os.environ.setdefault(k, v)
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    import gym_ray.episodes  # noqa: F401 - fail on a broken import before the engine's minutes of start
    from gym_ray.agents.tokenizer import load_tokenizer
    from gym_ray.config import TreeConfig, load_config
    from gym_ray.models.default_model import prepare_default_model
    from gym_ray.tasks import load_tasks

    cfg = load_config(args.config, args.overrides)
    [env_name] = cfg.envs
    tasks = load_tasks(cfg.envs[env_name].data, default_env=env_name, limit=args.limit)
    tree = TreeConfig(width=args.width, depth=args.depth, at=args.at)
    model = str(prepare_default_model())
    chat = load_tokenizer(model, cfg.model.chat_template or "chatml_tools")

    async def go() -> list[dict]:
        t0 = time.monotonic()
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=model, dtype="float32", max_model_len=2048, enforce_eager=True, enable_prefix_caching=True,
            disable_log_stats=False))
        try:
            policy = EnginePolicy(engine, "SmolLM2-135M-Instruct")
            await policy.generate(chat.hf.encode("warm up"), cfg.collect.sampling)
            print(f"engine up in {time.monotonic() - t0:.0f} s", file=sys.stderr)
            out = []
            for mode in ("independent", "tree"):
                out.append(await run_mode(mode, engine, policy, cfg, tasks, tree, chat, args.concurrency))
                print(f"{mode}: {out[-1]['wall_s']:.0f} s", file=sys.stderr)
            return out
        finally:
            engine.shutdown()

    results = asyncio.run(go())
    print(f"\n{env_name}: {len(tasks)} groups of {tree.leaves} leaves (tree width {tree.width}, depth {tree.depth}, "
          f"at {tree.at}), temperature {cfg.collect.sampling.temperature}, max_tokens "
          f"{cfg.collect.sampling.max_tokens}; prefix-cache hit = vllm:prefix_cache_hits / vllm:prefix_cache_queries\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
