"""Weight updates while episodes are in flight (`collect.weight_update`): real weather episodes in-process on
the scripted policy sampling at a fixed rate, its version raised while they generate. `finish` never mixes
versions in a span, `abort` continues token-exact under the new version, `drop` leaves masked rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gym_ray.config import ModelConfig
from gym_ray.episodes import EpisodeService
from gym_ray.models.client import make_policy_client
from gym_ray.tasks import load_tasks

WEATHER = Path(__file__).parents[1] / "environments" / "weather"
OVERRIDES = ["envs.weather.hosting=local", "model.chat_template=chatml_tools"]
EPISODES = 3
CUT_AT = 4  # tokens the first reply has sampled when the update starts


def scripted(tokens_per_second: float | None = 400.0):
    """The scripted weather policy inside this process (each test its own: versions are per copy)."""
    return make_policy_client(ModelConfig(kind="scripted", hosting="local", script="fault_helpers:weather_reply",
                                          chat_template="chatml_tools", tokens_per_second=tokens_per_second),
                              app_name="policy")


@pytest.fixture(scope="module")
def tasks():
    return load_tasks([WEATHER / "data" / "example.jsonl"], default_env="weather")[:EPISODES]


@pytest.fixture(scope="module")
def service():
    """The weather run's episodes in this process; each test passes its own policy."""
    return EpisodeService.from_config(WEATHER / "config.yaml", OVERRIDES, policy=scripted(None))


@pytest.fixture(scope="module")
def reference(service, tasks):
    """Each task's episode with no update: the tokens the policy produces, all under version 0."""

    async def go():
        return await asyncio.gather(*(service.run(t, 0) for t in tasks))

    return [rows[-1] for rows in asyncio.run(go())]


def run_with_update(service, tasks, mode: str, late: bool = False):
    """Run the tasks' episodes; once a first reply has sampled CUT_AT tokens, update the weights to version 1
    in `mode`. With `late`, one more episode starts while the update is under way. Returns (rows, cut)."""
    policy = scripted()

    async def go():
        running = [asyncio.create_task(service.run(t, 0, policy=policy)) for t in tasks]
        await policy._p().sampling_reached(CUT_AT)
        update = asyncio.create_task(policy.begin_weight_update(mode))
        if late:
            while not policy._p().updates.paused:
                await asyncio.sleep(0)
            running.append(asyncio.create_task(service.run(tasks[0], 0, policy=policy)))
        cut = await update
        await policy.end_weight_update(1)
        return [rows[-1] for rows in await asyncio.gather(*running)], cut

    return asyncio.run(go())


def spans(row) -> list[tuple[list[int], list[float], int, str]]:
    """(ids, logprobs, version, finish reason) of each generated span."""
    return [(row.response_token_ids[s:e], row.response_logprobs[s:e], v, f) for s, e, v, f in
            zip(row.gen_span_starts, row.gen_span_ends, row.gen_policy_versions, row.call_finish_reasons, strict=True)]


def sampled_under(logprobs: list[float], version: int) -> bool:
    """The scripted policy's logprob of a token names the version that sampled it: -version/1000."""
    return all(x == (-version / 1000 if version else 0.0) for x in logprobs)


def test_abort_continues_token_exact_under_the_new_version(service, tasks, reference):
    rows, cut = run_with_update(service, tasks, "abort")
    assert cut == EPISODES  # every first reply was generating
    assert max(row.gen_span_ends[0] - row.gen_span_starts[0] for row in rows) >= CUT_AT
    for row, ref in zip(rows, reference, strict=True):
        assert row.status == "ok" and not row.mask_sample and row.reward == ref.reward == 1.0
        # the same tokens as the episode without an update, token for token, across the version boundary
        assert row.prompt_token_ids == ref.prompt_token_ids and row.response_token_ids == ref.response_token_ids
        assert row.response_loss_mask == ref.response_loss_mask
        (prefix, lp0, v0, f0), (rest, lp1, v1, f1), *later = spans(row)
        first = spans(ref)[0][0]
        assert (v0, f0, v1, f1) == (0, "weight_update", 1, "stop")
        assert prefix and rest and prefix + rest == first
        assert row.gen_span_ends[0] == row.gen_span_starts[1]  # one model call, two spans
        assert sampled_under(lp0, 0) and sampled_under(lp1, 1) and lp1
        assert all(v == 1 and sampled_under(lp, 1) for _, lp, v, _ in later)
        assert row.num_turns == ref.num_turns == 2 and len(row.gen_span_starts) == len(ref.gen_span_starts) + 1


def test_finish_never_mixes_versions_in_a_span_and_new_calls_wait(service, tasks, reference):
    rows, cut = run_with_update(service, tasks, "finish", late=True)
    assert cut == 0
    *early, late = rows
    for row, ref in zip(early, reference, strict=True):
        assert row.status == "ok" and row.response_token_ids == ref.response_token_ids
        assert [(v, f) for _, _, v, f in spans(row)] == [(0, "stop"), (1, "stop")]  # first reply finished under 0
    assert [v for _, _, v, _ in spans(late)] == [1, 1]  # started during the update: waited for version 1
    for row in rows:
        assert all(sampled_under(lp, v) for _, lp, v, _ in spans(row))


def test_drop_leaves_masked_rows_naming_the_update(service, tasks):
    rows, cut = run_with_update(service, tasks, "drop")
    assert cut == EPISODES
    for row in rows:
        assert (row.status, row.mask_sample, row.failure_stage, row.failure_kind) == (
            "aborted", True, "generate", "aborted")
        assert row.error.startswith("weight_update: ") and "version 0" in row.error
        [(ids, lp, v, f)] = spans(row)
        assert (v, f) == (0, "weight_update") and ids and sampled_under(lp, 0)


def test_a_stream_reruns_groups_an_update_dropped(ray_cluster, serve_http_port, tmp_path):
    """On Ray, the policy on Serve: a trainer's `drop` updates while groups generate re-run those groups
    (`collect.on_dropped: rerun`); every group handed out is whole, none holds a dropped episode."""
    from gym_ray.collect import Collector, RolloutStream
    from gym_ray.collect.stream import dropped_by_update
    from gym_ray.config import load_config
    from gym_ray.models.deploy import delete_policy, deploy_policy

    model = ModelConfig(kind="scripted", name="wu_policy", chat_template="chatml_tools", tokens_per_second=100.0,
                        replies=[{"name": "get_weather", "arguments": {"city": "Paris"}}, "It is sunny in Paris."])
    cfg = load_config(WEATHER / "config.yaml", [*OVERRIDES, f"collect.output_dir={tmp_path}", "collect.num_repeats=2",
                                                "collect.on_dropped=rerun"])
    cfg = cfg.model_copy(update={"model": model})
    deploy_policy(model, "wu_policy")
    policy = make_policy_client(model, "wu_policy")
    tasks = load_tasks([WEATHER / "data" / "example.jsonl"], default_env="weather")[:3]

    async def go(collector):
        await collector.start()  # the agent actor is up: the groups generate at once
        async with RolloutStream(collector, tasks, batch_groups=3) as stream:
            version, cut = 0, 0
            while not cut:  # update until one lands while replies generate
                version += 1
                cut = await policy.begin_weight_update("drop")
                await policy.end_weight_update(version)
            return await stream.next_batch(), stream.stats(), version

    try:
        with Collector(cfg, apps={model.name: "wu_policy"}) as collector:
            batch, stats, version = asyncio.run(go(collector))
    finally:
        delete_policy("wu_policy")
    assert len(batch) == 3 and all(len(g.rollouts) == 2 for g in batch)
    assert stats["dropped_rerun"] >= 1 and stats["started"] == 3 + stats["dropped_rerun"]
    for group in batch:
        assert not dropped_by_update(group)
        assert all(r.status == "ok" and set(r.gen_policy_versions) <= set(range(version + 1)) for r in group.rollouts)


@pytest.mark.slow
def test_vllm_abort_mid_generation_continues_token_exact(shared_vllm):
    """On the real engine: an `abort` update cut while a greedy reply generates; the prefix (old version) and
    the continuation (new version, from prompt + prefix) are the tokens the uninterrupted reply has."""
    import time

    from gym_ray.config import SamplingConfig

    cfg, app = shared_vllm
    policy = make_policy_client(ModelConfig(**cfg), app)
    greedy = SamplingConfig(temperature=0.0, max_tokens=64)

    async def go():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(policy.tokenizer_path())
        prompt = tok.apply_chat_template([{"role": "user", "content": "Tell me a long story about a red fox."}],
                                         add_generation_prompt=True, tokenize=True, return_dict=False)
        before = await policy.policy_version()
        started = time.monotonic()
        reference = await policy.generate(prompt, greedy)
        took = time.monotonic() - started
        try:
            for attempt in range(3):  # no progress signal from the engine: cut half-way through its time
                running = asyncio.create_task(policy.generate(prompt, greedy))
                await asyncio.sleep(took * (0.5 + attempt) / 2)
                cut = await policy.begin_weight_update("abort")
                await policy.end_weight_update(before + attempt + 1)
                gen = await running
                if cut and "parts" in gen.extra:
                    return reference, gen, before + attempt
            pytest.fail("no update landed while the reply generated")
        finally:
            await policy.set_policy_version(before)

    reference, gen, old = asyncio.run(go())
    (n0, v0, f0), (n1, v1, f1) = gen.extra["parts"]
    assert (v0, f0, v1, f1) == (old, "weight_update", old + 1, reference.finish_reason)
    assert n0 > 0 and n1 > 0 and n0 + n1 == len(gen.token_ids) == len(gen.logprobs)
    assert gen.token_ids == reference.token_ids  # token-exact across the cut
    assert gen.logprobs[:n0] == pytest.approx(reference.logprobs[:n0], abs=1e-3)
    assert gen.policy_version == old + 1 and gen.extra["prompt_token_ids"] == reference.extra["prompt_token_ids"]
