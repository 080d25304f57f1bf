"""The asynchronous pipeline measured at cluster-like ratios on one machine: how much of the time the
trainer and the generator each sit idle, and steps per hour, synchronous against 1- and 2-step off-policy
and partial rollouts, at three ratios of generation to training time.

    .venv/bin/python benchmarks/async_pipeline.py                        # ratios 0.5 1 2, 10 steps, ~5 min
    .venv/bin/python benchmarks/async_pipeline.py --steps 20 --train-s 1 --ratios 0.25 1 4

What is real: the `RolloutStream` (its bounded buffer, its staleness check and re-runs), the `Collector`,
its agent actors and the rows they build. What is simulated: the generator, an engine actor with one slot
per rollout of a batch; each rollout's length is drawn (lognormal, seeded by task and rollout index: the
same workload for every mode), its token ids a fixed reply's cut at that length, and each slot decodes
at `tokens/s` (set so that one batch, run alone, takes `ratio` x a train step: its longest rollout). The trainer's step is a fixed sleep, then a weight push of `--load-s` into the
engine: `finish` drains the rollouts in flight under the old weights first (nothing new starts meanwhile);
`abort` cuts them, loads, and continues them from the same token prefix under the new weights, so one
rollout then holds spans of two versions (partial rollouts).

Modes: `sync` collects a batch, trains on it, pushes (the engine decodes nothing while the trainer works);
`off-policy k` keeps collecting while the trainer trains, up to k batches ahead (`max_staleness=k`);
`partial` is 1-step off-policy with `abort` pushes: a rollout cut at a push keeps its older prefix, so under
the oldest-span rule it can be one version older than a `finish` rollout when handed out, and is re-run at
`max_staleness=1`; `partial, staleness 2` allows that one version more. Trainer idle = wall time not
spent in train steps; generator idle = slot-seconds with no rollout decoding.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import sys
import time
from dataclasses import dataclass

import ray

REPLY = " ".join(f"word{i % 50}" for i in range(2048))  # long enough for any drawn length
PROMPT = [1, 2, 3, 4]


def response_tokens(task_id: str, rollout_index: int, seed: int, mean: int, sigma: float, cap: int) -> int:
    """The drawn length of one rollout: lognormal with this mean, cut at `cap` (the long tail of a batch)."""
    rng = random.Random(f"{seed}:{task_id}:{rollout_index}")
    return max(1, min(cap, round(rng.lognormvariate(math.log(mean) - sigma ** 2 / 2, sigma))))


@ray.remote(num_cpus=0)
class Engine:
    """A simulated inference engine: `slots` rollouts decode at once, each at `tps` tokens/s, a fixed
    reply's token ids cut at the drawn length; weight pushes in `finish` or `abort` mode (module docstring)."""

    def __init__(self, tokenizer_path: str):
        from transformers import AutoTokenizer

        self.reply = AutoTokenizer.from_pretrained(tokenizer_path).encode(REPLY, add_special_tokens=False)

    async def reset(self, tps: float, slots: int, mode: str, load_s: float) -> None:
        """A fresh engine for the next run, once the rollouts of the last one (cancelled on the agents,
        still decoding here) are done."""
        if getattr(self, "calls", 0):
            await self.quiet.wait()
        self.tps, self.mode, self.load_s, self.calls = tps, mode, load_s, 0
        self.quiet = asyncio.Event()
        self.slots = asyncio.Semaphore(slots)
        self.version, self.active, self.busy, self.last = 0, 0, 0.0, time.monotonic()
        self.open, self.idle, self.cut = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.open.set()
        self.idle.set()

    async def generate(self, n: int) -> tuple[list[int], list[tuple[int, int, int]]]:
        """Token ids of a rollout of `n` tokens and its spans (start, end, policy version)."""
        ids = self.reply[:n]
        spans, done = [], 0
        self.calls += 1
        self.quiet.clear()
        async with self.slots:
            while done < len(ids):
                await self.open.wait()
                version, cut, began = self.version, self.cut, time.monotonic()
                self._count(+1)
                try:
                    await asyncio.wait_for(cut.wait(), (len(ids) - done) / self.tps)
                    step = min(len(ids) - done, int((time.monotonic() - began) * self.tps))
                except TimeoutError:
                    step = len(ids) - done
                finally:
                    self._count(-1)
                if step:
                    spans.append((done, done + step, version))
                    done += step
        self.calls -= 1
        if not self.calls:
            self.quiet.set()
        return ids, spans

    async def hold(self) -> None:
        """Start no decoding until the next push (a synchronous trainer's step)."""
        self.open.clear()

    async def push(self) -> int:
        """A weight update: nothing new decodes until it is loaded; `abort` cuts what runs, `finish` waits."""
        self.open.clear()
        if self.mode == "abort":
            self.cut.set()
            self.cut = asyncio.Event()
        else:
            await self.idle.wait()
        await asyncio.sleep(self.load_s)
        self.version += 1
        self.open.set()
        return self.version

    def busy_slot_seconds(self) -> float:
        self._count(0)
        return self.busy

    def _count(self, delta: int) -> None:
        now = time.monotonic()
        self.busy += self.active * (now - self.last)
        self.last, self.active = now, self.active + delta
        if self.active:
            self.idle.clear()
        else:
            self.idle.set()


class SimPolicy:
    """The policy client the agent actors hold: the engine's handle."""

    model_name = "sim"

    def __init__(self, engine, tokenizer_path: str):
        self.engine, self._tok = engine, tokenizer_path

    def tokenizer_path(self) -> str:
        return self._tok


class NullEnv:
    async def tools(self):
        return []

    async def seed_session(self, session_id, task):
        return None

    async def verify(self, session_id, task, messages):
        from gym_ray.types import VerifyResult

        return VerifyResult(reward=1.0)

    async def close_session(self, session_id):
        return None


class OneCallAgent:
    """One generation of the drawn length per episode; a span per policy version it was decoded under."""

    def __init__(self, config):
        self.config = config

    async def run(self, task, ctx):
        from gym_ray.types import Rollout

        m = task.verifier_metadata
        n = response_tokens(task.task_id, ctx.rollout_index, m["seed"], m["mean"], m["sigma"], m["cap"])
        ids, spans = await ctx.policy.engine.generate.remote(n)
        result = await ctx.env.verify(ctx.session_id, task, [])
        return [Rollout(
            rollout_id=ctx.rollout_id, group_id=ctx.group_id, task_id=task.task_id, env=task.env,
            rollout_index=ctx.rollout_index, group_size=ctx.group_size, model="sim", prompt_token_ids=PROMPT,
            response_token_ids=ids, response_loss_mask=[1] * len(ids), response_logprobs=[0.0] * len(ids),
            gen_span_starts=[s for s, _, _ in spans], gen_span_ends=[e for _, e, _ in spans],
            call_finish_reasons=["length"] * len(spans), gen_policy_versions=[v for _, _, v in spans],
            policy_version=spans[-1][2], reward=result.reward, num_turns=1,
        )]


@dataclass
class Workload:
    batch_groups: int
    group_size: int
    mean_tokens: int
    sigma: float
    cap: int
    seed: int

    def tasks(self):
        from gym_ray.types import Task

        meta = {"seed": self.seed, "mean": self.mean_tokens, "sigma": self.sigma, "cap": self.cap}
        return (Task(task_id=f"t{i}", env="sim", prompt=[{"role": "user", "content": f"q{i}"}],
                     verifier_metadata=meta) for i in itertools.count())

    def batch_tokens(self, samples: int = 2000) -> float:
        """Expected length of a batch's longest rollout: what one batch's generation waits for."""
        rng = random.Random(self.seed)
        n = self.batch_groups * self.group_size
        return sum(max(response_tokens(f"x{rng.random()}", j, self.seed, self.mean_tokens, self.sigma, self.cap)
                       for j in range(n)) for _ in range(samples)) / samples


# mode: (batches generated ahead, max_staleness, weight push)
MODES = {"sync": (0, 0, "finish"), "off-policy 1": (1, 1, "finish"), "off-policy 2": (2, 2, "finish"),
         "partial": (1, 1, "abort"), "partial, staleness 2": (1, 2, "abort")}


async def run_mode(col, engine, w: Workload, mode: str, steps: int, train_s: float) -> dict:
    """`steps` train steps of `mode`; the trainer's and the generator's idle shares and the stream's counts."""
    from gym_ray.collect import RolloutStream

    k, staleness, _ = MODES[mode]
    mixed = 0
    # k batches ahead: one batch running and k - 1 waiting (the buffer admits while it holds fewer); sync
    # runs one batch ahead too, but its engine decodes nothing while the trainer trains
    stream = RolloutStream(col, w.tasks(), batch_groups=w.batch_groups, max_staleness=staleness,
                           max_buffered=max(k - 1, 0) * w.batch_groups + 1, max_in_flight=w.batch_groups)
    busy0 = await engine.busy_slot_seconds.remote()
    began = time.monotonic()
    try:
        await stream.start()
        for step in range(steps):
            batch = await stream.next_batch()
            if k == 0:
                await engine.hold.remote()
            assert len(batch) == w.batch_groups, f"{mode}: short batch at step {step}"
            mixed += sum(len(set(r.gen_policy_versions)) > 1 for g in batch for r in g.rollouts)
            await asyncio.sleep(train_s)
            stream.set_policy_version(await engine.push.remote())
        wall = time.monotonic() - began
        busy = await engine.busy_slot_seconds.remote() - busy0
    finally:
        counts = stream.stats()
        await stream.close()
    slots = w.batch_groups * w.group_size
    return {"mode": mode, "wall_s": wall, "trainer_idle": 1 - steps * train_s / wall,
            "generator_idle": 1 - busy / (slots * wall), "steps_per_hour": steps / wall * 3600,
            "stale_rerun": counts["stale_rerun"], "mixed_rows": mixed,
            "rows": steps * w.batch_groups * w.group_size}


def table(results: list[dict]) -> str:
    header = ["gen:train", "mode", "steps/h", "vs sync", "trainer idle", "generator idle", "stale re-runs",
              "rows with 2 versions"]
    lines = [header]
    sync = {r["ratio"]: r["steps_per_hour"] for r in results if r["mode"] == "sync"}
    for r in results:
        lines.append([f"{r['ratio']:g}", r["mode"], f"{r['steps_per_hour']:.0f}",
                      f"{r['steps_per_hour'] / sync[r['ratio']]:.2f}x", f"{r['trainer_idle']:.0%}",
                      f"{r['generator_idle']:.0%}", str(r["stale_rerun"]), f"{r['mixed_rows']}/{r['rows']}"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(wd) for c, wd in zip(row, widths, strict=True)) for row in lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                   help="one batch's generation time / one train step")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--train-s", type=float, default=1.0, help="one train step, seconds")
    p.add_argument("--load-s", type=float, default=0.05, help="one weight load into the engine, seconds")
    p.add_argument("--batch-groups", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--mean-tokens", type=int, default=256)
    p.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of rollout lengths")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in ("steps", "batch_groups", "group_size", "mean_tokens", "max_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.train_s <= 0 or args.load_s < 0 or min(args.ratios) <= 0:
        p.error("--train-s and --ratios must be > 0, --load-s >= 0")

    from gym_ray.collect import Collector
    from gym_ray.config import validate_config
    from gym_ray.models.default_model import prepare_default_model

    tok = str(prepare_default_model())
    w = Workload(args.batch_groups, args.group_size, args.mean_tokens, args.sigma, args.max_tokens, args.seed)
    slots = w.batch_groups * w.group_size
    cfg = validate_config({"envs": {"sim": {"server": "unused:Unused"}},
                           "collect": {"output_dir": "unused", "num_repeats": w.group_size, "num_agents": 1,
                                       "concurrency": 4 * slots}})
    batch_tokens = w.batch_tokens()

    async def measure(col, engine) -> list[dict]:
        await col.start()
        results = []
        for ratio in args.ratios:
            tps = batch_tokens / (ratio * args.train_s)
            for mode in args.modes:
                await engine.reset.remote(tps, slots, MODES[mode][2], args.load_s)
                r = await run_mode(col, engine, w, mode, args.steps, args.train_s)
                results.append({**r, "ratio": ratio, "tps": tps})
                print(f"  {ratio:g} {mode}: {r['wall_s']:.1f} s", file=sys.stderr)
        return results

    # a private cluster: never attach to someone else's on a shared machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        engine = Engine.remote(tok)
        with Collector(cfg, SimPolicy(engine, tok), envs={"sim": NullEnv()},
                       agent_classes={"sim": OneCallAgent}) as col:
            results = asyncio.run(measure(col, engine))
    finally:
        ray.shutdown()
    print(f"\nsimulated generator: {slots} slots, rollouts lognormal(mean {w.mean_tokens}, sigma {w.sigma}, cap "
          f"{w.cap}) tokens, a batch's longest {batch_tokens:.0f} "
          f"tokens expected; trainer step {args.train_s:g} s, weight load {args.load_s:g} s; {args.steps} steps "
          f"of {w.batch_groups} groups x {w.group_size}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
