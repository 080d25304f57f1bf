"""TRL's own GRPOTrainer fed by gym_ray's rollout_func: what TRL builds (ids, logprobs, loss mask, rewards)
is what gym_ray wrote to Parquet, and a failed or stale episode teaches nothing."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
import torch

from gym_ray.collect.api import Collector
from gym_ray.collect.plan import GroupSpec
from gym_ray.collect.runner import failed_row
from gym_ray.config import ModelConfig, RunConfig, load_config
from gym_ray.integrations.export import trl_rows
from gym_ray.integrations.trl import (
    GymRayRollouts,
    PromptTaskError,
    component_reward,
    env_reward,
    group_tasks,
    to_trl,
    trl_dataset,
)
from gym_ray.tasks import load_tasks
from gym_ray.types import Failure, FailureKind, FailureStage, Status

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEATHER = os.path.join(ROOT, "gym_ray", "environments", "weather", "config.yaml")


def weather_config(**collect) -> RunConfig:
    """Weather in-process, the scripted policy in-process: a tool call, then an answer (two model turns,
    a tool message and template tokens between them)."""
    cfg = load_config(WEATHER, [f"collect.{k}={v}" for k, v in collect.items()])
    model = ModelConfig(kind="scripted", hosting="local", chat_template="chatml_tools",
                        replies=[{"name": "get_weather", "arguments": {"city": "Paris"}}, "It is sunny in Paris."])
    envs = {"weather": cfg.envs["weather"].model_copy(update={"hosting": "local"})}
    return cfg.model_copy(update={"model": model, "envs": envs})


def grpo_trainer(model_path: str, rollouts, dataset, num_generations: int):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir="/tmp/gym_ray-test-trl", use_cpu=True, bf16=False, gradient_checkpointing=False,
                      beta=0.0, num_generations=num_generations, per_device_train_batch_size=2 * num_generations,
                      max_steps=1, report_to="none", save_strategy="no", logging_steps=1, seed=0)
    return GRPOTrainer(model=model_path, args=args, train_dataset=dataset,
                       reward_funcs=[env_reward, component_reward("correct")], rollout_func=rollouts)


def test_trl_loss_mask_is_zero_exactly_on_tokens_gym_ray_did_not_generate(ray_cluster, default_model_path, tmp_path):
    cfg = weather_config(num_repeats=2)
    tasks = load_tasks(cfg.envs["weather"].data, default_env="weather")[:2]
    received = []
    with Collector(cfg) as collector:
        rollouts = GymRayRollouts(collector, output_dir=tmp_path / "rows", on_batch=received.append)
        trainer = grpo_trainer(default_model_path, rollouts, trl_dataset(tasks), num_generations=2)
        batch = [row for row in trl_rows(tasks) for _ in range(2)]  # TRL's sampler order
        out = trainer._generate_and_score_completions(batch)
        rollouts.close()

    rows = {r["rollout_id"]: r for r in pq.read_table(tmp_path / "rows").to_pylist()}
    assert len(rows) == 4 and all(r["status"] == "ok" and r["num_turns"] == 2 for r in rows.values())
    (sent,) = received
    loss_mask = out["completion_mask"] * out["tool_mask"]
    for i, rid in enumerate(sent["gym_ray_rollout_id"]):
        row = rows[rid]
        n = len(row["response_token_ids"])
        # the ids TRL trains on, its loss mask and the logprobs it holds are the Parquet row's, token for token
        assert out["completion_ids"][i, :n].tolist() == row["response_token_ids"]
        assert loss_mask[i, :n].tolist() == row["response_loss_mask"]
        assert loss_mask[i, n:].sum() == 0
        assert 0 in row["response_loss_mask"] and 1 in row["response_loss_mask"]  # tool tokens are in there
        prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
        assert prompt == row["prompt_token_ids"]
        assert sent["logprobs"][i] == pytest.approx(row["response_logprobs"])
        assert sent["env_reward"][i] == row["reward"]
    # TRL's group-normalised advantages come from the environment's rewards, in sampler order
    rewards = torch.tensor([rows[r]["reward"] for r in sent["gym_ray_rollout_id"]]).view(-1, 2)
    expected = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    assert out["advantages"].tolist() == pytest.approx(expected.flatten().tolist(), abs=1e-4)


def _row(task, status=Status.OK, versions=(3,), reward=1.0):
    spec = GroupSpec(group_id="g", task=task, group_size=1)
    failure = Failure(stage=FailureStage.GENERATE, kind=FailureKind.EXCEPTION)
    row = failed_row(spec, 0, Status.MODEL_ERROR, "boom", failure)
    if status != Status.OK:
        return row
    return row.model_copy(update={
        "status": Status.OK, "mask_sample": False, "error": None, "failure_stage": None, "failure_kind": None,
        "failure_delivery": None, "prompt_token_ids": [1, 2, 3], "response_token_ids": [7, 8, 9, 2],
        "response_loss_mask": [1, 0, 1, 1], "response_logprobs": [-0.5, 0.0, -0.25, -0.125],
        "gen_span_starts": [0, 2], "gen_span_ends": [1, 4], "gen_policy_versions": list(versions),
        "reward": reward, "reward_component_names": ["correct"], "reward_component_values": [reward]})


class _Tok:
    eos_token_id = 2

    def apply_chat_template(self, messages, **kw):
        return [5, 6]


def test_failed_and_stale_episodes_are_masked_not_scored_zero():
    task = load_tasks([os.path.join(ROOT, "gym_ray", "environments", "weather", "data", "example.jsonl")])[0]
    ok, failed, stale = _row(task), _row(task, Status.MODEL_ERROR), _row(task, versions=(2, 3))
    out = to_trl([(ok, 1), (failed, 1), (stale, 2)], _Tok(), policy_version=3)
    assert out["completion_ids"][0] == [7, 8, 9, 2] and out["env_mask"][0] == [1, 0, 1, 1]
    assert out["env_reward"] == [1.0, None, None]  # None: TRL leaves it out of the group baseline
    assert out["env_mask"][1] == [0] * len(out["completion_ids"][1]) and out["env_mask"][2] == [0, 0, 0, 0]
    assert out["prompt_ids"][1]  # a row that failed before its prompt still gives TRL a sequence
    assert out["gym_ray_status"] == ["ok", "model_error", "stale"]
    assert out["num_segments"] == [1, 1, 2] and out["reward_components"][0] == {"correct": 1.0}
    assert component_reward("correct")([None] * 3, out["reward_components"]) == [1.0, None, None]


def test_prompts_must_come_as_contiguous_groups_of_tasks():
    tasks = load_tasks([os.path.join(ROOT, "gym_ray", "environments", "weather", "data", "example.jsonl")])[:2]
    a, b = (r["prompt"] for r in trl_rows(tasks))
    assert [t.task_id for t in group_tasks([a, a, b, b], 2)] == [tasks[0].task_id, tasks[1].task_id]
    with pytest.raises(PromptTaskError, match="not one task repeated"):
        group_tasks([a, b, a, b], 2)
    with pytest.raises(PromptTaskError, match="do not split into groups"):
        group_tasks([a, a, b], 2)
    with pytest.raises(PromptTaskError, match="gym-ray export trl"):
        group_tasks([[{"role": "user", "content": "hi"}]], 1)
