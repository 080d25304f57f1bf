"""The rollout stream on real agent actors: staleness against a policy whose version rises mid-run, the
buffer bound with a slow consumer, over-sampling's cancelled stragglers, the sync and async APIs, and a
consumer killed mid-stream."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import ray

from gym_ray.clients import Generation
from gym_ray.collect import Collector, RolloutStream, SyncRolloutStream
from gym_ray.config import validate_config
from gym_ray.types import Rollout, Task, VerifyResult

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class Board:
    """What the scripted trainer and the env share: the policy version, and the env sessions still open."""

    def __init__(self):
        self.version = 0
        self.open: set[str] = set()
        self.opened = 0

    def set_version(self, v: int) -> None:
        self.version = v

    def get_version(self) -> int:
        return self.version

    def open_session(self, sid: str) -> None:
        self.open.add(sid)
        self.opened += 1

    def close_session(self, sid: str) -> None:
        self.open.discard(sid)

    def sessions(self) -> tuple[int, list[str]]:
        return self.opened, sorted(self.open)


class VersionedPolicy:
    """A scripted policy: a fixed reply, stamped with the version the trainer last set."""

    model_name = "scripted"

    def __init__(self, board, tokenizer_path: str):
        self.board, self._tok = board, tokenizer_path

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        version = await self.board.get_version.remote()
        return Generation(token_ids=[11, 12, 2], logprobs=[-0.1, -0.2, -0.3], finish_reason="stop",
                          model=self.model_name, policy_version=version)

    async def chat(self, messages, tools, sampling):
        return {}

    def tokenizer_path(self) -> str:
        return self._tok


class SessionEnv:
    def __init__(self, board):
        self.board = board

    async def tools(self):
        return []

    async def seed_session(self, session_id, task):
        await self.board.open_session.remote(session_id)

    async def verify(self, session_id, task, messages):
        return VerifyResult(reward=1.0)

    async def close_session(self, session_id):
        await self.board.close_session.remote(session_id)


class SlowAgent:
    """Seeds a session, waits `sleep_s` (the task's), generates once, verifies and closes the session."""

    def __init__(self, config):
        self.config = config

    async def run(self, task, ctx):
        await ctx.env.seed_session(ctx.session_id, task)
        await asyncio.sleep(task.verifier_metadata.get("sleep_s", 0.0))
        gen = await ctx.policy.generate([1, 2, 3], ctx.sampling, ctx.session_id)
        result = await ctx.env.verify(ctx.session_id, task, [])
        await ctx.env.close_session(ctx.session_id)
        return [Rollout(
            rollout_id=ctx.rollout_id, group_id=ctx.group_id, task_id=task.task_id, env=task.env,
            rollout_index=ctx.rollout_index, group_size=ctx.group_size, model=gen.model,
            prompt_token_ids=[1, 2, 3], response_token_ids=gen.token_ids, response_loss_mask=[1, 1, 1],
            response_logprobs=gen.logprobs, gen_span_starts=[0], gen_span_ends=[3], call_finish_reasons=["stop"],
            gen_policy_versions=[gen.policy_version], policy_version=gen.policy_version, reward=result.reward,
            num_turns=1,
        )]


@pytest.fixture(scope="module")
def setup(ray_cluster, default_model_path, tmp_path_factory):
    """One collector (one agent actor, 64 episodes at once) for the module; its board is reset per test."""
    board = Board.remote()
    cfg = validate_config({"envs": {"fake": {"server": "unused:Unused"}},
                           "collect": {"output_dir": str(tmp_path_factory.mktemp("out")), "num_repeats": 2,
                                       "concurrency": 64}})
    col = Collector(cfg, VersionedPolicy(board, default_model_path), envs={"fake": SessionEnv(board)},
                    agent_classes={"fake": SlowAgent})
    yield col, board
    col.shutdown()


def _tasks(n: int, prefix: str = "t", **meta) -> list[Task]:
    return [Task(task_id=f"{prefix}{i}", env="fake", prompt=[{"role": "user", "content": f"q{i}"}],
                 verifier_metadata=meta) for i in range(n)]


def _oldest(group) -> int:
    return min(v for r in group.rollouts for v in r.gen_policy_versions)


async def _until(stream: RolloutStream, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        await asyncio.wait_for(stream.changed(), max(deadline - time.monotonic(), 0.01))


def _no_open_sessions(board, timeout: float = 30.0) -> tuple[int, list[str]]:
    """Wait (up to `timeout`) for every env session to be closed; (sessions opened, still open)."""
    deadline = time.monotonic() + timeout
    while True:
        opened, still = ray.get(board.sessions.remote())
        if not still or time.monotonic() > deadline:
            return opened, still
        time.sleep(0.1)


@pytest.mark.parametrize("on_stale", ["rerun", "drop"])
def test_every_group_handed_out_is_within_max_staleness(setup, on_stale):
    col, board = setup
    ray.get(board.set_version.remote(0))
    tasks = _tasks(12, sleep_s=0.02)

    async def train() -> tuple[list, RolloutStream]:
        stream = RolloutStream(col, tasks, batch_groups=2, max_buffered=4, max_staleness=0, on_stale=on_stale)
        handed = []
        async with stream:
            version = 0
            while batch := await stream.next_batch():
                assert all(version - _oldest(g) <= 0 for g in batch)
                handed += batch
                if version < 2:  # the trainer steps once the buffer is full: every group in it is now stale
                    await _until(stream, lambda: stream.stats()["admission_paused"])
                    version += 1
                    await board.set_version.remote(version)
                    stream.set_policy_version(version)
            return handed, stream

    handed, stream = asyncio.run(train())
    s = stream.stats()
    ids = [g.task_id for g in handed]
    assert len(ids) == len(set(ids)) and len({g.group_id for g in handed}) == len(handed)
    assert [_oldest(g) for g in handed] == sorted(_oldest(g) for g in handed)  # the version only rises
    if on_stale == "rerun":
        assert s["stale_rerun"] >= 8 and s["stale_dropped"] == 0 and _oldest(handed[-1]) == 2
        assert sorted(ids) == sorted(t.task_id for t in tasks)  # every task handed out once, fresh
    else:
        assert s["stale_dropped"] >= 8 and s["stale_rerun"] == 0
        assert len(ids) + s["stale_dropped"] == len(tasks)


def test_buffer_bound_holds_with_a_slow_consumer(setup):
    """64 episodes in flight (16 groups of 4), 8 finished groups at most waiting: the stream never holds more
    than 24 groups, and admission stops while the buffer is full."""
    col, board = setup
    ray.get(board.set_version.remote(0))

    async def consume() -> dict:
        stream = RolloutStream(col, _tasks(96, sleep_s=0.05), batch_groups=4, num_repeats=4, max_in_flight=16,
                               max_buffered=8)
        async with stream:
            await _until(stream, lambda: stream.stats()["running"] == 16)
            while True:
                await _until(stream, lambda: stream.stats()["admission_paused"] or stream.ended)
                s = stream.stats()
                assert s["started"] - s["handed_out"] <= 8 + 16
                assert s["buffered"] + s["running"] <= 8 + 16
                if not await stream.next_batch():
                    return stream.stats()

    s = asyncio.run(consume())
    assert s["handed_out"] == 96 and s["peak_running"] == 16
    assert s["peak_held"] <= 24 and 8 <= s["peak_buffered"] <= 24


def test_over_sampling_cancels_stragglers_without_rows_or_sessions(setup):
    col, board = setup
    ray.get(board.set_version.remote(0))
    ray.get([board.close_session.remote(s) for s in ray.get(board.sessions.remote())[1]])
    opened_before = ray.get(board.sessions.remote())[0]
    tasks = [t for b in range(3) for t in (*_tasks(2, f"fast{b}-"), *_tasks(2, f"slow{b}-", sleep_s=300))]

    async def train() -> tuple[list, dict]:
        async with RolloutStream(col, tasks, batch_groups=2, over_sample=2, max_buffered=2) as stream:
            batches = [await stream.next_batch() for _ in range(3)]
            await _until(stream, lambda: stream.stats()["cancelled"] == 6)
            return batches, stream.stats()

    batches, s = asyncio.run(train())
    assert [sorted(g.task_id for g in b) for b in batches] == [[f"fast{b}-0", f"fast{b}-1"] for b in range(3)]
    assert s["cancelled"] == 6 and s["discarded"] == 0 and s["running"] == 0
    opened, still = _no_open_sessions(board)
    assert still == [] and opened - opened_before >= 12  # every straggler had seeded its session; all closed


def test_a_consumer_killed_mid_pull_loses_nothing_and_duplicates_nothing(setup):
    col, board = setup
    ray.get(board.set_version.remote(0))

    async def run() -> tuple[list, list, bool, dict]:
        async with RolloutStream(col, _tasks(10, sleep_s=0.2), batch_groups=3) as stream:
            first = await stream.next_batch()
            pull = asyncio.create_task(stream.next_batch(50))  # more than there are: it waits for the end
            await _until(stream, lambda: stream.stats()["buffered"] >= 3)
            pull.cancel()  # the consumer dies while it waits, with groups buffered
            await asyncio.gather(pull, return_exceptions=True)
            rest = [g async for batch in stream for g in batch]  # the next consumer
            return first, rest, pull.cancelled(), stream.stats()

    first, rest, cancelled, s = asyncio.run(run())
    ids = [g.group_id for g in first + rest]
    assert cancelled and len(first) == 3
    assert len(ids) == len(set(ids)) == 10
    assert sorted(g.task_id for g in first + rest) == sorted(f"t{i}" for i in range(10))
    assert s["handed_out"] == 10 and s["buffered"] == 0


def test_sync_iterator_and_arrow_tables_for_ray_data(setup):
    col, board = setup
    ray.get(board.set_version.remote(0))
    seen: list[str] = []
    with SyncRolloutStream(RolloutStream(col, _tasks(10), batch_groups=3)) as stream:
        for batch in stream:  # a consumer that stops after one batch
            seen += [g.group_id for g in batch]
            break
        tables = list(stream.tables())  # the next one gets the rest
        s = stream.stats()
    rest = [gid for t in tables for gid in t.column("group_id").unique().to_pylist()]
    assert len(seen) == 3 and [t.num_rows for t in tables] == [6, 6, 2]
    assert len(set(seen + rest)) == len(seen + rest) == 10 and s["handed_out"] == 10
    assert ray.data.from_arrow(tables).count() == 14


def test_an_agent_actor_killed_mid_stream_loses_and_duplicates_nothing(setup):
    """Last in the module: it kills the shared collector's actor (Ray restarts it, its groups run again)."""
    col, board = setup
    ray.get(board.set_version.remote(0))

    async def run() -> tuple[list, dict]:
        async with RolloutStream(col, _tasks(8, sleep_s=0.5), batch_groups=2, max_in_flight=4) as stream:
            handed = await stream.next_batch()
            await _until(stream, lambda: stream.stats()["running"] == 4)
            ray.kill(col.scheduler.actors[0], no_restart=False)
            handed += [g async for batch in stream for g in batch]
            return handed, stream.stats()

    handed, s = asyncio.run(run())
    assert sorted(g.task_id for g in handed) == sorted(f"t{i}" for i in range(8))
    assert len({g.group_id for g in handed}) == 8 and col.scheduler.regrouped >= 1
    assert all(r.status.value == "ok" for g in handed for r in g.rollouts)
