"""gym_ray episodes inside VeRL 0.9.1's real AgentLoopWorker (built from VeRL's own composed ppo_trainer
config), with VeRL's own RLHFDataset, reward extraction and GRPO advantages. Only the LLM server is ours:
`LLMClient` has `LLMServerClient.generate`'s signature and serves tokens from gym_ray's scripted policy
(or, in the slow test, from the embedded model on vLLM CPU)."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from verl.protocol import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import AdvantageEstimator  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.reward import extract_reward  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from gym_ray.config import ModelConfig, SamplingConfig  # noqa: E402
from gym_ray.integrations.export import export_verl  # noqa: E402
from gym_ray.integrations.verl import CONFIG_ENV, RowError  # noqa: E402
from gym_ray.models.scripted import ScriptedPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOOP_YAML = REPO / "gym_ray" / "integrations" / "verl_agent_loop.yaml"
N = 3
PROMPT_LEN, RESPONSE_LEN = 512, 256
STEP = 7  # the trainer's weight version the fake server reports


def rollout_index(request_id: str) -> int:
    """gym_ray's session id is `<group>-<index>.a<attempt>`."""
    return int(request_id.rsplit(".a", 1)[0].rsplit("-", 1)[1])


def fake_logprob(token_id: int) -> float:
    return -((token_id % 7) + 1) / 8


class LLMClient:
    """`LLMServerClient.generate(request_id, *, prompt_ids, sampling_params) -> TokenOutput`, recording
    every call. Rollout 1 of each group gets the `bad` script, the others `good`; `broken` rollouts raise."""

    def __init__(self, tokenizer_path: str, broken: frozenset[int] = frozenset()):
        self.policies = {v: ScriptedPolicy(ModelConfig(kind="scripted", script=f"verl_scripts:{v}"), tokenizer_path)
                         for v in ("good", "bad")}
        self.broken = broken
        self.calls: dict[str, list[tuple[list[int], list[int], list[float]]]] = defaultdict(list)
        self.params: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        index = rollout_index(request_id)
        if index in self.broken:
            raise RuntimeError("server refused the request")
        self.params.append(dict(sampling_params))
        policy = self.policies["bad" if index == 1 else "good"]
        gen = await policy.generate(prompt_ids, SamplingConfig(max_tokens=sampling_params["max_tokens"]))
        logprobs = [fake_logprob(t) for t in gen.token_ids]
        self.calls[request_id].append((list(prompt_ids), gen.token_ids, logprobs))
        return TokenOutput(token_ids=gen.token_ids, log_probs=logprobs if sampling_params.get("logprobs") else None,
                           stop_reason="completed", extra_fields={"global_steps": STEP})


@pytest.fixture(scope="module")
def run_config(tmp_path_factory) -> str:
    """A gym_ray run config with the two environments, in-process, on the tool-aware chat template."""
    path = tmp_path_factory.mktemp("verl") / "run.yaml"
    path.write_text(
        f"includes: [{REPO}/environments/weather/config.yaml, {REPO}/environments/blackjack/config.yaml]\n"
        "model: {chat_template: chatml_tools}\n"
        "envs: {weather: {hosting: local}, blackjack: {hosting: local}}\n"
        "collect: {sampling: {max_tokens: 48}}\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def verl_config(default_model_path, run_config):
    """VeRL's own ppo_trainer config, composed by hydra, pointing at the shipped agent loop YAML."""
    import verl
    from hydra import compose, initialize_config_dir

    old = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = run_config  # the shipped YAML has run_config: null -> read from here
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        cfg = compose("ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={default_model_path}",
            "actor_rollout_ref.rollout.name=vllm",
            f"actor_rollout_ref.rollout.n={N}",
            f"actor_rollout_ref.rollout.prompt_length={PROMPT_LEN}",
            f"actor_rollout_ref.rollout.response_length={RESPONSE_LEN}",
            f"actor_rollout_ref.rollout.agent.agent_loop_config_path={LOOP_YAML}",
            f"data.max_prompt_length={PROMPT_LEN}",
        ])
    yield cfg
    if old is None:
        os.environ.pop(CONFIG_ENV, None)
    else:
        os.environ[CONFIG_ENV] = old


def make_worker(cfg, client):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    return AgentLoopWorker(cfg, llm_client=client)


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verl-data") / "train.parquet"
    export_verl([REPO / "environments/weather/data/example.jsonl", REPO / "environments/blackjack/data/example.jsonl"],
                out)
    return out


def batch_of(worker, cfg, path: Path, keep: list[str], uid: str = "g") -> DataProto:
    """What RayPPOTrainer hands the worker: RLHFDataset rows, collated, a uid per prompt (fresh per step
    in VeRL), repeated n times."""
    ds = RLHFDataset(data_files=[str(path)], tokenizer=worker.tokenizer, config=cfg.data)
    rows = [r for r in (ds[i] for i in range(len(ds))) if r["extra_info"]["task_id"] in keep]
    batch = DataProto.from_single_dict(collate_fn(rows))
    batch.non_tensor_batch["uid"] = np.array([f"{uid}{i}" for i in range(len(batch))], dtype=object)
    return batch.repeat(repeat_times=N, interleave=True)


def generate(worker, batch: DataProto) -> DataProto:
    return asyncio.run(worker.generate_sequences(batch))


def check_token_exact(out: DataProto, client_calls: dict, i: int) -> None:
    """Sample i of the DataProto is exactly what the server generated: every call's prompt extends the
    sequence so far, mask 1 exactly on generated ids (with their logprobs), 0 on tool and pad tokens."""
    b = out.batch
    prompt_valid = int(b["attention_mask"][i, :PROMPT_LEN].sum())
    resp_valid = int(b["attention_mask"][i, PROMPT_LEN:].sum())
    prompt = b["prompts"][i, PROMPT_LEN - prompt_valid:].tolist()
    response = b["responses"][i, :resp_valid].tolist()
    mask = b["response_mask"][i].tolist()
    logprobs = b["rollout_log_probs"][i].tolist()
    assert all(m == 0 for m in mask[resp_valid:]), "pad tokens must carry mask 0"
    calls = client_calls[out.non_tensor_batch["gym_ray_rollout_id"][i] + ".a0"]
    seq, gen_mask, gen_lp = list(prompt), [], []
    for call_prompt, ids, lps in calls:
        assert call_prompt[: len(seq)] == seq, "each call's prompt extends the sequence so far"
        glue = call_prompt[len(seq):]  # tool output / observation tokens, as the template's delta
        seq += glue + ids
        gen_mask += [0] * len(glue) + [1] * len(ids)
        gen_lp += [0.0] * len(glue) + lps
    assert seq[:len(prompt)] == prompt and seq[len(prompt):] == response
    assert mask[:resp_valid] == gen_mask
    assert logprobs[:resp_valid] == pytest.approx(gen_lp)
    assert all(lp == 0.0 for lp in logprobs[resp_valid:])


def test_worker_runs_gym_ray_episodes(verl_config, dataset_path, default_model_path):
    client = LLMClient(default_model_path)
    worker = make_worker(verl_config, client)
    batch = batch_of(worker, verl_config, dataset_path, keep=["weather-0", "blackjack-0"])
    assert len(batch) == 2 * N
    out = generate(worker, batch)
    b, nt = out.batch, out.non_tensor_batch

    assert b["prompts"].shape == (2 * N, PROMPT_LEN) and b["responses"].shape == (2 * N, RESPONSE_LEN)
    assert b["input_ids"].shape == b["attention_mask"].shape == b["position_ids"].shape == (2 * N, PROMPT_LEN + RESPONSE_LEN)
    assert b["response_mask"].shape == b["rollout_log_probs"].shape == b["rm_scores"].shape == (2 * N, RESPONSE_LEN)
    assert list(nt["uid"]) == ["g0"] * N + ["g1"] * N and list(nt["gym_ray_group_id"]) == list(nt["uid"])
    assert list(nt["gym_ray_env"]) == ["weather"] * N + ["blackjack"] * N
    assert all(s == "ok" for s in nt["gym_ray_status"])
    assert all(v == [STEP] * len(v) and v for v in nt["gym_ray_policy_versions"])
    assert all(nt["min_global_steps"][i] == nt["max_global_steps"][i] == STEP for i in range(2 * N))
    for i in range(2 * N):
        check_token_exact(out, client.calls, i)

    # Weather is multi-turn with a tool: mask 1 (call) / 0 (tool output) / 1 (answer); blackjack steps.
    valid = b["response_mask"][0, : int(b["attention_mask"][0, PROMPT_LEN:].sum())].tolist()
    first, last = valid.index(1), len(valid) - 1 - valid[::-1].index(1)
    assert 0 in valid[first:last]
    assert len(client.calls[nt["gym_ray_rollout_id"][0] + ".a0"]) == 2
    # The verifier's reward sits at the last valid response token, nowhere else.
    rewards = []
    for i in range(2 * N):
        last = int(b["attention_mask"][i, PROMPT_LEN:].sum()) - 1
        rm = b["rm_scores"][i]
        assert rm[:last].abs().sum() == 0 and rm[last + 1:].abs().sum() == 0
        rewards.append(float(rm[last]))
    assert rewards[:N] == [1.0, 0.0, 1.0]  # good (tool + right answer), bad (no tool), good
    assert nt["gym_ray_reward_components"][0] == {"called_tool": 1.0, "condition": 1.0, "temperature": 1.0}
    assert rewards[N] == rewards[N + 2]  # the same deal, both stand

    # VeRL's own reward extraction and GRPO give the advantages computed by hand from those rewards.
    reward_tensor, _ = extract_reward(out)
    out.batch["token_level_rewards"] = reward_tensor
    out = compute_advantage(out, adv_estimator=AdvantageEstimator.GRPO, num_repeat=N, norm_adv_by_std_in_grpo=True)
    for g in range(2):
        r = torch.tensor(rewards[g * N:(g + 1) * N])
        expected = (r - r.mean()) / (r.std() + 1e-6)
        for j in range(N):
            i = g * N + j
            adv = out.batch["advantages"][i]
            m = out.batch["response_mask"][i].bool()
            assert adv[m] == pytest.approx(torch.full((int(m.sum()),), float(expected[j])).tolist(), abs=1e-4)
            assert adv[~m].abs().sum() == 0

    # The trainer's sampling parameters reach the server; gym_ray adds its per-turn max_tokens.
    p = client.params[0]
    assert p["temperature"] == verl_config.actor_rollout_ref.rollout.temperature and p["logprobs"] is True
    assert 0 < p["max_tokens"] <= 48


def test_failed_episode_is_masked_not_scored(verl_config, dataset_path, default_model_path):
    """A rollout whose server call fails stays in the batch with a zero mask and its status."""
    client = LLMClient(default_model_path, broken=frozenset({2}))
    worker = make_worker(verl_config, client)
    out = generate(worker, batch_of(worker, verl_config, dataset_path, keep=["weather-1"], uid="f"))
    nt = out.non_tensor_batch
    assert len(out) == N
    assert list(nt["gym_ray_status"]) == ["ok", "ok", "model_error"]
    assert nt["gym_ray_failure_stage"][2] == "generate" and "server refused" in nt["gym_ray_error"][2]
    assert out.batch["response_mask"][2].sum() == 0 and out.batch["rm_scores"][2].sum() == 0
    assert out.batch["response_mask"][0].sum() > 0


def test_bad_rows_fail_the_batch_naming_row_and_field(verl_config, dataset_path, default_model_path, tmp_path):
    client = LLMClient(default_model_path)
    worker = make_worker(verl_config, client)
    batch = batch_of(worker, verl_config, dataset_path, keep=["weather-0", "blackjack-0"], uid="b")
    extra = [dict(e) for e in batch.non_tensor_batch["extra_info"]]
    extra[4]["task_json"] = extra[4]["task_json"].replace('"env":"blackjack"', '"env":"nope"')
    batch.non_tensor_batch["extra_info"] = np.array(extra, dtype=object)
    with pytest.raises(RowError, match=r"row index=6 uid='b1': extra_info\.task_json\.env: unknown env 'nope'"):
        generate(worker, batch)

    extra[4]["task_json"] = '{"task_id": "x", "env": "blackjack", "prompt": []}'
    batch.non_tensor_batch["extra_info"] = np.array(extra, dtype=object)
    with pytest.raises(RowError, match=r"row index=6 uid='b1': extra_info\.task_json\.prompt: "):
        generate(worker, batch)


def test_exported_parquet_is_verl_native(dataset_path, verl_config, default_model_path):
    ds = RLHFDataset(data_files=[str(dataset_path)], tokenizer=make_worker(verl_config, None).tokenizer,
                     config=verl_config.data)
    assert len(ds) == 14
    row = ds[0]
    assert row["data_source"] == "gym_ray/weather" and row["agent_name"] == "gym_ray" and row["ability"] == "weather"
    assert row["raw_prompt"][1]["content"] == "What's the weather like in Paris?"
    assert row["reward_model"]["ground_truth"] == '{"city": "Paris"}'
    assert row["extra_info"]["task_id"] == "weather-0" and '"env":"weather"' in row["extra_info"]["task_json"]


class VLLMClient:
    """`LLMServerClient.generate` over an in-process vLLM engine, as VeRL's vLLM server does it (token
    prompt, `logprobs=0`: the sampled token's logprob), recording what the engine returned."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: dict[str, list[tuple[list[int], list[int], list[float]]]] = defaultdict(list)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        import uuid

        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(
            temperature=sampling_params["temperature"], top_p=sampling_params["top_p"],
            top_k=sampling_params["top_k"], max_tokens=sampling_params["max_tokens"],
            stop=sampling_params.get("stop"), logprobs=0 if sampling_params.get("logprobs") else None)
        outputs = [o async for o in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params,
                                                          request_id=uuid.uuid4().hex)]
        c = outputs[-1].outputs[0]
        ids = list(c.token_ids)
        logprobs = [c.logprobs[k][t].logprob for k, t in enumerate(ids)]
        self.calls[request_id].append((list(prompt_ids), ids, logprobs))
        return TokenOutput(token_ids=ids, log_probs=logprobs, stop_reason="completed")


@pytest.mark.slow
def test_worker_on_embedded_vllm_cpu_policy(verl_config, dataset_path, default_model_path):
    """The same worker path with the embedded model on vLLM CPU: every id and logprob is the engine's."""
    from gym_ray.models.offline import cpu_engine_env

    for k, v in cpu_engine_env().items():
        os.environ.setdefault(k, v)
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    async def go():
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=default_model_path, dtype="bfloat16", max_model_len=2048, enforce_eager=True))
        try:
            client = VLLMClient(engine)
            worker = make_worker(verl_config, client)
            batch = batch_of(worker, verl_config, dataset_path, keep=["weather-0", "blackjack-0"], uid="v")
            return client, await worker.generate_sequences(batch)
        finally:
            engine.shutdown()

    client, out = asyncio.run(go())
    assert len(out) == 2 * N and out.batch["responses"].shape == (2 * N, RESPONSE_LEN)
    for i in range(2 * N):
        assert out.non_tensor_batch["gym_ray_status"][i] == "ok", out.non_tensor_batch["gym_ray_error"][i]
        check_token_exact(out, client.calls, i)
    lps = [lp for calls in client.calls.values() for _, _, call_lps in calls for lp in call_lps]
    assert lps and all(lp <= 0.0 for lp in lps) and any(lp < 0.0 for lp in lps)


class _Remote:
    """A Ray actor method's `.remote`, in-process."""

    def __init__(self, fn):
        self.remote = fn


class CutServer:
    """VeRL's rollout server during a fully-async weight sync: the first request of every turn is cut after
    `cut` tokens (`aborted`, weights STEP); its resume, prompt + those tokens, gets the rest under STEP + 1."""

    def __init__(self, tokenizer_path: str, cut: int = 3):
        self.policy = ScriptedPolicy(ModelConfig(kind="scripted", script="verl_scripts:good"), tokenizer_path)
        self.cut, self.rest, self.replies = cut, defaultdict(list), []  # rollouts of a group share prompts
        self.generate = _Remote(self._generate)

    async def _generate(self, request_id, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        key = tuple(prompt_ids)
        if self.rest.get(key):
            ids, version, stop = self.rest[key].pop(), STEP + 1, "completed"
        else:
            gen = await self.policy.generate(prompt_ids, SamplingConfig(max_tokens=sampling_params["max_tokens"]))
            self.replies.append(gen.token_ids)
            ids, version, stop = gen.token_ids[:self.cut], STEP, "aborted"
            self.rest[key + tuple(ids)].append(gen.token_ids[self.cut:])
        return TokenOutput(token_ids=ids, log_probs=[fake_logprob(t) for t in ids], stop_reason=stop,
                           extra_fields={"global_steps": version})


class OneServerBalancer:
    def __init__(self, server):
        self.server = server
        self.require_acquire_fields = self.require_release_fields = _Remote(self._no_fields)
        self.acquire_server = _Remote(self._acquire)
        self.release_server = _Remote(lambda **kwargs: None)

    async def _no_fields(self):
        return []

    async def _acquire(self, request_id, **kwargs):
        return "s0", self.server


def test_fully_async_partial_rollouts_reach_gym_ray_whole_and_stamped_with_the_oldest_version(
        verl_config, dataset_path, default_model_path):
    """VeRL's fully-async client (`FullyAsyncLLMServerClient`) resumes every cut generation and merges it;
    gym_ray's agent loop gets whole turns, token for token, each stamped with the oldest weights in it."""
    from verl.workers.rollout.llm_server import FullyAsyncLLMServerClient

    server = CutServer(default_model_path)
    worker = make_worker(verl_config, FullyAsyncLLMServerClient(verl_config, OneServerBalancer(server)))
    out = generate(worker, batch_of(worker, verl_config, dataset_path, keep=["weather-0"]))
    nt, b = out.non_tensor_batch, out.batch
    assert list(nt["gym_ray_status"]) == ["ok"] * N and not any(server.rest.values())  # every cut resumed
    assert len(server.replies) == 2 * N  # a tool call and an answer per rollout, each cut once
    assert all(v == [STEP, STEP] for v in nt["gym_ray_policy_versions"])  # stamped with the older weights
    assert list(nt["min_global_steps"]) == [STEP] * N
    for i in range(N):
        response = b["responses"][i, : int(b["attention_mask"][i, PROMPT_LEN:].sum())].tolist()
        first = next(r for r in server.replies if response[: len(r)] == r)  # the tool call, uncut
        assert any(response[-len(r):] == r for r in server.replies if r != first)  # the answer, uncut
        assert b["response_mask"][i, : len(first)].tolist() == [1] * len(first)
        assert b["rm_scores"][i].sum() == 1.0


class TreeClient:
    """`LLMServerClient.generate` answering with the counter script (`tree_helpers`), recording each call."""

    def __init__(self, tokenizer_path: str):
        self.policy = ScriptedPolicy(ModelConfig(kind="scripted", script="tree_helpers:counting_script"),
                                     tokenizer_path)
        self.generated = 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        gen = await self.policy.generate(prompt_ids, SamplingConfig(max_tokens=sampling_params["max_tokens"]))
        self.generated += len(gen.token_ids)
        return TokenOutput(token_ids=gen.token_ids, log_probs=[fake_logprob(t) for t in gen.token_ids],
                           stop_reason="completed", extra_fields={"global_steps": STEP})


def test_tree_leaves_are_samples_with_their_shared_prefix_once(verl_config, default_model_path, tmp_path,
                                                               monkeypatch):
    """`collect.tree` (width N = rollout.n, depth 1) in the run config: a prompt's N samples are the leaves
    of one tree, played once; the shared prefix's mask is kept in one leaf, so VeRL's masks hold each
    generated token once in all; VeRL's GRPO runs on them."""
    run = tmp_path / "run.yaml"
    run.write_text(f"includes: [{REPO}/environments/counter/config.yaml]\nmodel: {{chat_template: chatml_tools}}\n"
                   f"envs: {{counter: {{hosting: local}}}}\ncollect: {{tree: {{width: {N}, depth: 1}}, "
                   "sampling: {max_tokens: 48}}\n")
    monkeypatch.setenv(CONFIG_ENV, str(run))
    data = tmp_path / "counter.parquet"
    export_verl([REPO / "environments/counter/data/example.jsonl"], data)
    client = TreeClient(default_model_path)
    worker = make_worker(verl_config, client)
    out = generate(worker, batch_of(worker, verl_config, data, keep=["counter-0"], uid="t"))
    nt, b = out.non_tensor_batch, out.batch
    assert list(nt["gym_ray_status"]) == ["ok"] * N and not any(nt["gym_ray_truncated"])
    assert sorted(t[1] for t in nt["gym_ray_tree"]) == [f"0.{k}" for k in range(N)]
    assert len({t[0] for t in nt["gym_ray_tree"]}) == 1
    masks = [int(m.sum()) for m in b["response_mask"]]
    assert sum(masks) == client.generated  # the shared prefix once, each branch's own tokens once
    assert masks[0] > max(masks[1:])  # the first leaf keeps the prefix
    reward_tensor, _ = extract_reward(out)
    out.batch["token_level_rewards"] = reward_tensor
    out = compute_advantage(out, adv_estimator=AdvantageEstimator.GRPO, num_repeat=N, norm_adv_by_std_in_grpo=True)
    assert out.batch["advantages"][~out.batch["response_mask"].bool()].abs().sum() == 0
