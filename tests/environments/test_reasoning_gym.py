"""reasoning_gym: generated tasks from named datasets, scored by the dataset's own score_answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from env_helpers import env_and_tasks, score
from gym_ray_env_reasoning_gym.generate import main as generate_main
from gym_ray_env_reasoning_gym.generate import make_tasks

from gym_ray.tasks import load_tasks

ENV_DIR = Path(__file__).parents[2] / "environments" / "reasoning_gym"






def test_right_wrong_and_malformed_answers():
    env, tasks = env_and_tasks("reasoning_gym")
    assert len(tasks) >= 5
    assert {t.verifier_metadata["metadata"]["source_dataset"] for t in tasks} == {
        "basic_arithmetic",
        "leg_counting",
        "word_sorting",
    }
    for task in tasks:
        expected = task.verifier_metadata["answer"]
        right = score(env, task, f"Thinking step by step...\n<answer>{expected}</answer>")
        assert right.reward == 1.0 and right.error is None, (task.task_id, right)
        wrong = score(env, task, "<answer>definitely not it 12345</answer>")
        assert wrong.reward == 0.0 and "score_answer gave 0" in wrong.info["reason"], (task.task_id, wrong)
        malformed = score(env, task, f"The answer is {expected}")
        assert malformed.reward == 0.0 and "no <answer>" in malformed.info["reason"]


def test_generate_any_dataset_by_name_with_settings(tmp_path):
    out = tmp_path / "tasks.jsonl"
    settings = '{"min_terms": 2, "max_terms": 2}'
    generate_main(
        ["--dataset", "chain_sum", "--size", "4", "--seed", "7", "--config", settings, "--out", str(out)]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == make_tasks("chain_sum", 4, 7, {"min_terms": 2, "max_terms": 2})  # reproducible by seed
    tasks = load_tasks([out])
    assert len(tasks) == 4 and len({t.task_id for t in tasks}) == 4
    assert all(t.verifier_metadata["metadata"]["num_terms"] == 2 for t in tasks)  # the settings were applied
    env, _ = env_and_tasks("reasoning_gym")
    for task in tasks:
        assert score(env, task, f"<answer>{task.verifier_metadata['answer']}</answer>").reward == 1.0
    with pytest.raises(ValueError, match="unknown reasoning-gym dataset 'no_such'"):
        make_tasks("no_such", 1)
