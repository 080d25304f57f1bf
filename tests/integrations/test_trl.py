"""TRL's own GRPOTrainer fed by gym_ray's rollout_func: what TRL builds (ids, logprobs, loss mask, rewards)
is what gym_ray wrote to Parquet, and a failed or stale episode teaches nothing."""

from __future__ import annotations

import asyncio
import os

import pyarrow.parquet as pq
import pytest
import torch

from gym_ray.collect.api import Collector
from gym_ray.config import ModelConfig, RunConfig, SamplingConfig, load_config
from gym_ray.episodes import Group, failed_row
from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.integrations.export import trl_rows
from gym_ray.integrations.trl import (
    GymRayRollouts,
    PromptTaskError,
    component_reward,
    env_reward,
    episodes,
    group_tasks,
    task_epochs,
    to_trl,
    trl_dataset,
)
from gym_ray.tasks import load_tasks

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 6


# A tool environment (a tool call, then an answer) and a step-driven one (hit, then stand): two model turns
# with a tool message or an observation, and template tokens, between them.
SCRIPTS = {
    "weather": [{"name": "get_weather", "arguments": {"city": "Paris"}}, "It is sunny in Paris."],
    "blackjack": ["One more card. <action>hit</action>", "I will stand. <action>stand</action>"],
}


def scripted_config(env: str, **collect) -> RunConfig:
    """`env` in-process, driven by the scripted policy in-process."""
    path = os.path.join(ROOT, "environments", env, "config.yaml")
    cfg = load_config(path, [f"collect.{k}={v}" for k, v in collect.items()])
    model = ModelConfig(kind="scripted", hosting="local", chat_template="chatml_tools", replies=SCRIPTS[env])
    envs = {env: cfg.envs[env].model_copy(update={"hosting": "local"})}
    return cfg.model_copy(update={"model": model, "envs": envs})


def grpo_trainer(model_path: str, rollouts, dataset, num_generations: int):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir="/tmp/gym_ray-test-trl", use_cpu=True, bf16=False, gradient_checkpointing=False,
                      beta=0.0, num_generations=num_generations, per_device_train_batch_size=2 * num_generations,
                      max_steps=1, report_to="none", save_strategy="no", logging_steps=1, seed=0)
    return GRPOTrainer(model=model_path, args=args, train_dataset=dataset,
                       reward_funcs=[env_reward, component_reward("called_tool")], rollout_func=rollouts)


@pytest.mark.parametrize("env", ["weather", "blackjack"])
def test_trl_loss_mask_is_zero_exactly_on_tokens_gym_ray_did_not_generate(env, ray_cluster, default_model_path,
                                                                          tmp_path):
    cfg = scripted_config(env, num_repeats=2)
    tasks = load_tasks(cfg.envs[env].data, default_env=env)[:2]
    received = []
    with Collector(cfg) as collector:
        rollouts = GymRayRollouts(collector, output_dir=tmp_path / "rows", on_batch=received.append)
        trainer = grpo_trainer(default_model_path, rollouts, trl_dataset(tasks), num_generations=2)
        batch = [dict(row) for row in trl_rows(tasks) for _ in range(2)]  # TRL's sampler order, a dict each
        out = trainer._generate_and_score_completions(batch)
        rollouts.close()

    rows = {r["rollout_id"]: r for r in pq.read_table(tmp_path / "rows").to_pylist()}
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values())
    assert any(r["num_turns"] == 2 for r in rows.values())
    (sent,) = received
    loss_mask = out["completion_mask"] * out["tool_mask"]
    for i, rid in enumerate(sent["gym_ray_rollout_id"]):
        row = rows[rid]
        n = len(row["response_token_ids"])
        # the ids TRL trains on, its loss mask and the logprobs it holds are the Parquet row's, token for token
        assert out["completion_ids"][i, :n].tolist() == row["response_token_ids"]
        assert loss_mask[i, :n].tolist() == row["response_loss_mask"]
        assert loss_mask[i, n:].sum() == 0
        if row["num_turns"] == 2:  # a tool message / observation between the turns
            assert 0 in row["response_loss_mask"] and 1 in row["response_loss_mask"]
        prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
        assert prompt == row["prompt_token_ids"]
        assert sent["logprobs"][i] == pytest.approx(row["response_logprobs"])
        assert sent["env_reward"][i] == row["reward"]
    # TRL's group-normalised advantages come from the environment's rewards, in sampler order
    rewards = torch.tensor([rows[r]["reward"] for r in sent["gym_ray_rollout_id"]]).view(-1, 2)
    expected = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    assert out["advantages"].tolist() == pytest.approx(expected.flatten().tolist(), abs=1e-4)


def _row(task, status=Status.OK, versions=(3,), reward=1.0):
    failure = Failure(stage=FailureStage.GENERATE, kind=FailureKind.EXCEPTION)
    row = failed_row(task, Group("g"), 0, Status.MODEL_ERROR, "boom", failure)
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
    task = load_tasks([os.path.join(ROOT, "environments", "weather", "data", "example.jsonl")])[0]
    ok, failed, stale = _row(task), _row(task, Status.MODEL_ERROR), _row(task, versions=(2, 3))
    out = to_trl([(ok, 1), (failed, 1), (stale, 2)], _Tok(), policy_version=3)
    assert out["completion_ids"][0] == [7, 8, 9, 2] and out["env_mask"][0] == [1, 0, 1, 1]
    assert out["env_reward"] == [1.0, None, None]  # None: TRL leaves it out of the group baseline
    assert out["env_mask"][1] == [0] * len(out["completion_ids"][1]) and out["env_mask"][2] == [0, 0, 0, 0]
    assert out["prompt_ids"][1]  # a row that failed before its prompt still gives TRL a sequence
    assert out["gym_ray_status"] == ["ok", "model_error", "stale"]
    assert out["num_segments"] == [1, 1, 2] and out["reward_components"][0] == {"correct": 1.0}
    assert component_reward("correct")([None] * 3, out["reward_components"]) == [1.0, None, None]
    # off-policy by one step: a row whose oldest span is one version behind is trained on, two behind is not
    older = _row(task, versions=(1, 3))
    out = to_trl([(ok, 1), (stale, 2), (older, 1)], _Tok(), policy_version=3, max_staleness=1)
    assert out["gym_ray_status"] == ["ok", "ok", "stale"] and out["env_reward"] == [1.0, 1.0, None]


async def _until_buffered(stream, n: int) -> None:
    while stream.stats()["buffered"] < n:
        await asyncio.wait_for(stream.changed(), 60)


def test_off_policy_rollouts_of_the_next_step_are_made_before_trl_asks(ray_cluster, default_model_path, tmp_path):
    """off_policy_steps=1: once TRL has a step's rows, the stream makes the next step's while it trains; those
    rows, one version old when TRL takes them, reach TRL unmasked and token for token as in Parquet."""
    cfg = scripted_config("weather", num_repeats=2)
    tasks = load_tasks(cfg.envs["weather"].data, default_env="weather")[:3]
    received = []
    with Collector(cfg) as collector:
        rollouts = GymRayRollouts(collector, output_dir=tmp_path / "rows", on_batch=received.append,
                                  off_policy_steps=1, tasks=tasks, seed=0)
        trainer = grpo_trainer(default_model_path, rollouts, trl_dataset(tasks), num_generations=2)
        trainer.model.train()
        batch = [row for row in trl_rows(tasks[:2]) for _ in range(2)]
        trainer._generate_and_score_completions(batch)
        rollouts.run(_until_buffered(rollouts.stream, 2))  # the next step's groups, made while nothing asked
        rollouts.set_policy_version(1)  # the trainer stepped
        out = trainer._generate_and_score_completions(batch)
        stats = rollouts.stream.stats()
        rollouts.close()

    assert stats["handed_out"] == 4 and stats["stale_rerun"] == 0
    epochs = task_epochs(tasks, 0)
    first_four = sorted(next(epochs).task_id for _ in range(4))  # the stream's order: a seeded shuffle per epoch
    rows = {r["rollout_id"]: r for r in pq.read_table(tmp_path / "rows").to_pylist()}
    assert len(rows) == 8 and sorted(rid for sent in received for rid in sent["gym_ray_rollout_id"]) == sorted(rows)
    assert sorted(r["task_id"] for r in rows.values() if r["rollout_index"] == 0) == first_four
    second = received[1]
    assert second["gym_ray_status"] == ["ok"] * 4 and second["policy_version"] == [0] * 4
    for i, rid in enumerate(second["gym_ray_rollout_id"]):
        n = len(rows[rid]["response_token_ids"])
        assert out["completion_ids"][i, :n].tolist() == rows[rid]["response_token_ids"]
        assert second["env_mask"][i] == rows[rid]["response_loss_mask"]


def test_prompts_must_come_as_contiguous_groups_of_tasks():
    tasks = load_tasks([os.path.join(ROOT, "environments", "weather", "data", "example.jsonl")])[:2]
    a, b = (r["prompt"] for r in trl_rows(tasks))
    assert [t.task_id for t in group_tasks([a, a, b, b], 2)] == [tasks[0].task_id, tasks[1].task_id]
    with pytest.raises(PromptTaskError, match="not one task repeated"):
        group_tasks([a, b, a, b], 2)
    with pytest.raises(PromptTaskError, match="do not split into groups"):
        group_tasks([a, a, b], 2)
    with pytest.raises(PromptTaskError, match="gym-ray export trl"):
        group_tasks([[{"role": "user", "content": "hi"}]], 1)


@pytest.mark.slow
def test_closed_loop_learns_on_vllm_with_weights_synced_every_step(shared_vllm, default_model_path, tmp_path):
    """The embedded model on vLLM CPU behind Serve (the session's engine), TRL GRPO on one_word: the reward
    rises, the policy version rises once per step, and what TRL received is what gym_ray wrote, token for
    token. The engine gets its own weights and version 0 back after."""
    from gym_ray.integrations.trl_loop import LoopSettings, closed_loop
    from gym_ray.models import make_policy_client

    model, app = shared_vllm
    cfg = load_config(os.path.join(ROOT, "environments", "one_word", "config.yaml"))
    cfg = cfg.model_copy(update={"model": ModelConfig(**model)})
    policy = make_policy_client(cfg.model, app)
    probe = list(range(1000, 1016))  # any prompt: greedy ids and logprobs fingerprint the weights
    greedy = SamplingConfig(temperature=0.0, max_tokens=8)
    before = asyncio.run(policy.generate(probe, greedy))
    received: list[dict] = []
    try:
        result = closed_loop(cfg, LoopSettings(steps=STEPS, learning_rate=3e-5, seed=0), tmp_path / "rows",
                             {app: app}, on_batch=received.append)
    finally:
        asyncio.run(policy.update_weights("reload_weights", kwargs={"weights_path": str(default_model_path)},
                                          version=0))
    after = asyncio.run(policy.generate(probe, greedy))
    assert (after.token_ids, after.policy_version) == (before.token_ids, 0)
    assert after.logprobs == pytest.approx(before.logprobs, abs=1e-4)
    steps = result.steps
    assert [s["policy_version"] for s in steps] == [[i] for i in range(STEPS)]
    assert all(s["failed"] == 0 and s["rollouts"] == 16 for s in steps)
    first, last = steps[0]["mean_reward"], sum(s["mean_reward"] for s in steps[-2:]) / 2
    assert last >= first + 0.2, [s["mean_reward"] for s in steps]

    rows = {r["rollout_id"]: r for r in pq.read_table(tmp_path / "rows").to_pylist()}
    assert len(rows) == 16 * STEPS
    for step, sent in enumerate(received):
        for i, rid in enumerate(sent["gym_ray_rollout_id"]):
            row = rows[rid]
            assert sent["completion_ids"][i] == row["response_token_ids"]
            assert sent["prompt_ids"][i] == row["prompt_token_ids"]
            assert sent["logprobs"][i] == row["response_logprobs"]
            assert sent["env_mask"][i] == row["response_loss_mask"]
            assert row["gen_policy_versions"] == [step] and sent["env_reward"][i] == row["reward"]


def test_a_multi_segment_episode_is_one_sample_its_last_segment():
    task = load_tasks([os.path.join(ROOT, "environments", "weather", "data", "example.jsonl")])[0]
    first = _row(task).model_copy(update={"segment_index": 0, "num_segments": 2, "reward": 0.0,
                                          "status": Status.PREFIX_BREAK})
    last = _row(task).model_copy(update={"segment_index": 1, "num_segments": 2})
    other = _row(task).model_copy(update={"rollout_index": 1, "rollout_id": "other"})
    assert episodes([first, last, other]) == [(last, 2), (other, 1)]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_exported_dataset_loads_with_datasets_and_carries_each_task(tmp_path, suffix, capsys):
    from datasets import load_dataset

    from gym_ray.cli import main as cli_main
    from gym_ray.integrations.trl import task_of

    files = [os.path.join(ROOT, "environments", e, "data", "example.jsonl") for e in ("weather", "one_word")]
    out = tmp_path / f"train{suffix}"
    assert cli_main(["export", "trl", *files, str(out)]) == 0
    ds = load_dataset(suffix.lstrip(".").replace("jsonl", "json"), data_files=str(out))["train"]
    tasks = load_tasks(files)
    assert len(ds) == len(tasks)
    assert [task_of(row["prompt"]) for row in ds] == tasks
    assert [m["content"] for m in ds[0]["prompt"]] == [m.content for m in tasks[0].prompt]
    assert cli_main(["export", "trl", *files, str(tmp_path / "x.csv")]) == 2
    assert "x.csv: the output must be a .parquet or .jsonl file" in capsys.readouterr().err


def test_tree_leaves_reach_grpo_with_their_shared_prefix_once(default_model_path):
    """Two real trees (width 2, depth 2) handed to TRL's own GRPOTrainer as gym_ray's rollout_func hands
    them: TRL's loss mask is the shared-prefix weights (either mode), its advantages the tree advantages."""
    from tree_helpers import counter_tasks, play_trees
    from trl import GRPOConfig, GRPOTrainer

    from gym_ray.advantages import prefix_loss_weights, tree_advantages
    from gym_ray.config import TreeConfig
    from gym_ray.integrations.trl import add_tree_fields, tree_advantage

    tasks = counter_tasks()[:2]
    rows = play_trees(default_model_path, TreeConfig(width=2, depth=2), tasks)
    assert len(rows) == 8 and all(r.status == "ok" and r.tree_id for r in rows)
    mode = []

    def rollout_func(prompts, trainer):
        eps = episodes(rows)
        out = to_trl(eps, trainer.processing_class, None)
        add_tree_fields(out, [r for r, _ in eps], mode[-1], global_term=True)
        return out

    args = GRPOConfig(output_dir="/tmp/gym_ray-test-trl", use_cpu=True, bf16=False, beta=0.0, num_generations=4,
                      per_device_train_batch_size=8, max_steps=1, report_to="none", save_strategy="no",
                      scale_rewards="none", seed=0)
    trainer = GRPOTrainer(model=default_model_path, args=args, train_dataset=trl_dataset(tasks),
                          reward_funcs=tree_advantage, rollout_func=rollout_func)
    for prefix_loss in ("train_once", "weighted"):
        mode.append(prefix_loss)
        out = trainer._generate_and_score_completions([dict(row) for row in trl_rows(tasks) for _ in range(4)])
        weights = prefix_loss_weights(rows, prefix_loss)
        loss_mask = out["completion_mask"] * out["tool_mask"]
        for i, row in enumerate(rows):
            n = len(row.response_token_ids)
            assert out["completion_ids"][i, :n].tolist() == row.response_token_ids
            assert loss_mask[i, :n].tolist() == pytest.approx(weights[i]) and loss_mask[i, n:].sum() == 0
            # every leaf shares its prefix; only the first leaf of a tree keeps all of it, and only train_once
            kept_all = weights[i] == [float(m) for m in row.response_loss_mask]
            assert kept_all == (prefix_loss == "train_once" and i % 4 == 0)
        # scale_rewards="none": a group of whole trees has mean advantage 0, so TRL's centring keeps them
        assert out["advantages"].tolist() == pytest.approx(tree_advantages(rows, global_term=True), abs=1e-6)


def test_a_tree_node_that_ended_early_is_filled_with_masked_samples(default_model_path):
    """A node that ended before branching is one leaf for its subtree: TRL still gets whole groups, the
    missing leaves as masked copies that neither teach nor shift the baseline."""
    from tree_helpers import counter_tasks, play_trees

    from gym_ray.config import TreeConfig
    from gym_ray.integrations.trl import add_tree_fields, fill_tree_group

    rows = play_trees(default_model_path, TreeConfig(width=2, depth=2), counter_tasks()[:1])
    early = rows[2].model_copy(update={"node_id": "0.1", "parent_node_id": "0"})  # as if 0.1 ended at once
    eps = fill_tree_group(episodes([rows[0], rows[1], early]), 4)
    assert [r.rollout_index for r, _ in eps] == [0, 1, 2, 3] and eps[3][0].mask_sample
    out = to_trl(eps, _Tok(), None)
    add_tree_fields(out, [r for r, _ in eps], "train_once", global_term=False)
    assert out["gym_ray_status"] == ["ok", "ok", "ok", "tree_filler"]
    assert out["env_reward"][3] is None and out["tree_advantage"][3] is None and not any(out["env_mask"][3])
    assert out["tree_advantage"][2] == 0.0  # alone under its parent: nothing to be better than
    assert fill_tree_group(eps, 4) == eps
