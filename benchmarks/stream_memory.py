"""Memory of a rollout stream with thousands of episodes in flight and a slow consumer: does it stay under a
bound, and what does an episode in flight cost?

    .venv/bin/python benchmarks/stream_memory.py                     # 1,000 then 10,000 in flight, ~5 min
    .venv/bin/python benchmarks/stream_memory.py --in-flight 1000 --seconds 60

Workload: the `one_word` environment and the scripted policy, both in-process in the agent actors
(`hosting: local`); the policy answers "Cat." (3 tokens) at `--tokens-per-second` per episode, so each
episode stays open `3 / tokens-per-second` seconds (60 s by default) and all of them are open at once.
One collector (`collect.concurrency` = the largest `--in-flight`, `--agents` actors); per `--in-flight`
N, a `RolloutStream` of groups of `--group-size` with `max_in_flight` = N / group size groups and
`max_buffered` as many, over-sampling 10%, read by a consumer that takes a batch of a tenth of the groups
then sleeps `--consume-every` seconds (slower than the episodes finish, so the buffer fills and admission
pauses). Every `--sample-s` it records the episodes in flight on the actors (their episode service's
count), the groups the stream holds (buffered + running), the driver's and each agent actor's RSS
(psutil on their pids) and what could leak: groups the actors still track, the scheduler's cancelled ids.

The table: per N, the peak episodes in flight, the peak groups held against the stream's bound
`max_buffered + max_in_flight`, each process's RSS before the stream started, at its peak and at the
end (after `close()`), the actors' added RSS per episode in flight and the driver's per group held.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from pathlib import Path

import psutil
import ray

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "environments" / "one_word" / "data" / "example.jsonl"
REPLY_TOKENS = 3  # "Cat." and the end-of-sequence token
MB = 1 << 20


def build_config(args):
    from gym_ray.config import validate_config

    return validate_config({
        "model": {"kind": "scripted", "name": "policy", "replies": ["Cat."], "hosting": "local",
                  "tokens_per_second": args.tokens_per_second},
        "envs": {"one_word": {"server": "one_word", "hosting": "local",
                              "agent": {"cls": "gym_ray.agents.tool_calling:ToolCallingAgent", "max_turns": 1}}},
        "collect": {"output_dir": "unused", "num_repeats": args.group_size, "concurrency": max(args.in_flight),
                    "num_agents": args.agents, "episode_timeout_s": 3600, "sampling": {"max_tokens": 24}},
    })


def endless_tasks():
    """The example tasks over and over, each with an id of its own."""
    from gym_ray.tasks import load_tasks

    base = load_tasks([DATA])
    for i in itertools.count():
        t = base[i % len(base)]
        yield t.model_copy(update={"task_id": f"{t.task_id}.{i}"})


def _actor_state(self) -> dict:
    """Runs inside an agent actor (`__ray_call__`): its pid, episodes in flight, groups it tracks."""
    return {"pid": os.getpid(), "in_flight": self.service.in_flight, "groups": len(self._groups)}


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except psutil.NoSuchProcess:
        return float("nan")


async def sample(col, stream, t0: float) -> dict:
    states = await asyncio.gather(*(a.__ray_call__.remote(_actor_state) for a in col.scheduler.actors))
    s = stream.stats() if stream is not None else {"buffered": 0, "running": 0, "handed_out": 0}
    return {"t": time.monotonic() - t0, "in_flight": sum(x["in_flight"] for x in states),
            "actor_groups": sum(x["groups"] for x in states), "held": s["buffered"] + s["running"],
            "buffered": s["buffered"], "handed_out": s["handed_out"],
            "cancelled_ids": len(col.scheduler._cancelled), "driver_mb": rss_mb(os.getpid()),
            "actor_mb": [rss_mb(x["pid"]) for x in states]}


async def run_phase(col, tasks, args, n: int) -> dict:
    """One stream with `n` episodes in flight and a slow consumer, sampled while it runs."""
    from gym_ray.collect import RolloutStream

    groups = n // args.group_size
    batch = max(1, groups // 10)
    stream = RolloutStream(col, tasks, batch_groups=batch, over_sample=max(1, batch // 10),
                           max_in_flight=groups, max_buffered=groups)
    t0 = time.monotonic()
    before = await sample(col, None, t0)
    samples: list[dict] = []
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            samples.append(await sample(col, stream, t0))
            print(fmt_sample(samples[-1]), file=sys.stderr)
            try:
                await asyncio.wait_for(done.wait(), args.sample_s)
            except TimeoutError:
                pass

    watcher = asyncio.create_task(sampler())
    await stream.start()
    deadline = t0 + args.seconds
    while (left := deadline - time.monotonic()) > 0:
        try:  # a pull cancelled at the deadline takes nothing
            await asyncio.wait_for(stream.next_batch(), left)
        except TimeoutError:
            break
        await asyncio.sleep(min(args.consume_every, max(deadline - time.monotonic(), 0)))
    stats = stream.stats()
    await stream.close()
    done.set()
    await watcher
    # once the actors have closed the cancelled episodes (a group they still track after that is a leak)
    settle = time.monotonic() + 120
    while ((after := await sample(col, None, t0))["in_flight"] or after["actor_groups"]) and time.monotonic() < settle:
        await asyncio.sleep(0.5)
    if after["actor_groups"]:
        print(f"{n:,} in flight: the actors still track {after['actor_groups']} groups 120 s after close()",
              file=sys.stderr)
    return {"n": n, "bound": stream.max_buffered + stream.max_in_flight, "stats": stats, "before": before,
            "samples": samples, "after": after}


def fmt_sample(s: dict) -> str:
    actors = " ".join(f"{m:.0f}" for m in s["actor_mb"])
    return (f"  t={s['t']:6.1f}s in_flight={s['in_flight']:6d} held={s['held']:5d} buffered={s['buffered']:5d} "
            f"handed_out={s['handed_out']:6d} actor_groups={s['actor_groups']:5d} "
            f"cancelled_ids={s['cancelled_ids']:4d} driver={s['driver_mb']:.0f} MB actors={actors} MB")


def summary(phases: list[dict], agents: int) -> str:
    header = ["in flight (target)", "peak in flight", "peak held groups", "bound", "handed out",
              "driver MB before/peak/end", *(f"agent-{i} MB before/peak/end" for i in range(agents)),
              "actors KB per episode", "driver KB per held group"]
    rows = [header]
    for p in phases:
        ss, b, a = p["samples"], p["before"], p["after"]
        peak_in = max(s["in_flight"] for s in ss)
        peak_held = max(p["stats"]["peak_held"], *(s["held"] for s in ss))
        at_peak = max(ss, key=lambda s: s["in_flight"])
        driver_peak = max(s["driver_mb"] for s in ss)
        actor_peaks = [max(s["actor_mb"][i] for s in ss) for i in range(agents)]
        per_episode = (sum(at_peak["actor_mb"]) - sum(b["actor_mb"])) * 1024 / max(peak_in, 1)
        per_group = (driver_peak - b["driver_mb"]) * 1024 / max(peak_held, 1)
        rows.append([f"{p['n']:,}", f"{peak_in:,}", f"{peak_held:,}", f"{p['bound']:,}",
                     f"{p['stats']['handed_out']:,} groups",
                     f"{b['driver_mb']:.0f}/{driver_peak:.0f}/{a['driver_mb']:.0f}",
                     *(f"{b['actor_mb'][i]:.0f}/{actor_peaks[i]:.0f}/{a['actor_mb'][i]:.0f}" for i in range(agents)),
                     f"{per_episode:.1f}", f"{per_group:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--in-flight", type=int, nargs="+", default=[1000, 10000], help="episodes in flight, per run")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--tokens-per-second", type=float, default=0.05, help="per episode: 3 tokens take 60 s")
    p.add_argument("--seconds", type=float, default=120.0, help="how long each stream runs")
    p.add_argument("--consume-every", type=float, default=10.0, help="the consumer's sleep after each batch")
    p.add_argument("--sample-s", type=float, default=5.0)
    args = p.parse_args()
    for name in ("group_size", "agents"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.in_flight) < args.group_size:
        p.error(f"--in-flight must be >= --group-size ({args.group_size})")
    if min(args.tokens_per_second, args.seconds, args.consume_every, args.sample_s) <= 0:
        p.error("--tokens-per-second, --seconds, --consume-every and --sample-s must be > 0")

    from gym_ray.collect import Collector

    cfg = build_config(args)
    load0 = os.getloadavg()
    # a private cluster: never attach to someone else's on a shared machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with Collector(cfg) as col:
            async def measure() -> list[dict]:
                await col.start()
                tasks = endless_tasks()
                return [await run_phase(col, tasks, args, n) for n in args.in_flight]

            phases = asyncio.run(measure())
    finally:
        ray.shutdown()
    print(f"\none_word, scripted policy in-process, {REPLY_TOKENS} tokens at {args.tokens_per_second:g} tokens/s "
          f"per episode; {args.agents} agent actors; groups of {args.group_size}; each stream {args.seconds:g} s, "
          f"a batch of a tenth of its groups every {args.consume_every:g} s; load average "
          f"{load0[0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print(summary(phases, args.agents))
    return 0


if __name__ == "__main__":
    sys.exit(main())
