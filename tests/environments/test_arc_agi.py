"""arc_agi: both versions' splits load whole; every test output, played as the answer, matches; a grid
with one wrong cell scores 0 (or its cell share with shaping on); the answer's grid forms parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from env_helpers import env_and_tasks, verdicts
from gym_ray_env_arc_agi.server import ArcAgi, grid_text, load_split, parse_grid

from gym_ray.collect.api import own_tasks
from gym_ray.config import load_config
from gym_ray.tasks import TaskLoadError

CONFIG = Path(__file__).parents[2] / "environments" / "arc_agi" / "config.yaml"
SPLITS = {  # (version, split): (tasks, test outputs)
    ("arc-agi-1", "training"): (400, 416),
    ("arc-agi-1", "evaluation"): (400, 419),
    ("arc-agi-2", "training"): (1000, 1076),
    ("arc-agi-2", "evaluation"): (120, 167),
}


def env_tasks(*overrides: str):
    return env_and_tasks("arc_agi", *overrides)


def _one_cell_wrong(grid: list[list[int]]) -> list[list[int]]:
    wrong = [list(r) for r in grid]
    wrong[-1][-1] = (wrong[-1][-1] + 1) % 10
    return wrong


@pytest.mark.parametrize(("version", "split"), list(SPLITS))
def test_oracle_and_one_wrong_cell_on_every_row(version, split):
    env, tasks = env_tasks(
        f"envs.arc_agi.config.version={version}",
        f"envs.arc_agi.config.split={split}",
        "envs.arc_agi.config.max_prompt_chars=null",
    )
    n_tasks, n_rows = SPLITS[(version, split)]
    assert len(load_split(version, split)) == n_tasks and len(tasks) == n_rows
    right = verdicts(
        env, [(t, f"The output grid:\n{grid_text(t.verifier_metadata['output'])}") for t in tasks]
    )
    assert [r.reward for r in right] == [1.0] * n_rows
    wrong = verdicts(env, [(t, grid_text(_one_cell_wrong(t.verifier_metadata["output"]))) for t in tasks])
    assert all(r.reward == 0.0 and r.error is None and r.components["exact"] == 0.0 for r in wrong)
    assert all("cells right" in r.info["reason"] for r in wrong)


def test_cell_accuracy_shaping_and_answer_forms():
    env, tasks = env_tasks("envs.arc_agi.config.cell_accuracy=true")
    task = next(t for t in tasks if len(t.verifier_metadata["output"]) >= 3)
    grid = task.verifier_metadata["output"]
    n = len(grid) * len(grid[0])
    spaced = "\n".join(" ".join(map(str, r)) for r in grid)
    cases = [
        (json.dumps(grid), 1.0),  # a JSON list of rows
        (f"```\n{spaced}\n```\nDone.", 1.0),  # digits with spaces, in a fence
        (f"Input echo:\n{grid_text(grid[::-1])}\n\nAnswer:\n{grid_text(grid)}", 1.0),  # the last grid counts
        (grid_text(_one_cell_wrong(grid)), (n - 1) / n),  # shaping: the share of right cells
        (grid_text(grid[:-1]), 0.0),  # wrong shape: nothing
        ("I do not know.", 0.0),
    ]
    results = verdicts(env, [(task, a) for a, _ in cases])
    for (answer, reward), r in zip(cases, results, strict=True):
        assert r.reward == pytest.approx(reward) and r.error is None, (answer, r)
    assert results[3].components == {"exact": 0.0, "cell_accuracy": pytest.approx((n - 1) / n)}
    assert "expected" in results[4].info["reason"] and results[5].info["reason"] == "no grid in the answer"
    assert parse_grid("12\n345") == (None, "the last grid in the answer has rows of unequal length")


def test_options():
    _, short = env_tasks()  # the config keeps the rows that fit the embedded model's context
    assert len(short) == 227 and all(len(t.prompt[0].content) <= 1600 for t in short)
    assert {t.task_id for t in short} < {t.task_id for t in ArcAgi().tasks("arc_agi")}
    assert [t.task_id for t in ArcAgi().tasks("arc_agi", limit=2)] == ["00576224/0", "009d5c81/0"]
    with pytest.raises(ValueError, match="config.version: unknown 'arc-agi-3'"):
        ArcAgi(version="arc-agi-3")
    cfg = load_config(CONFIG, ["envs.arc_agi.config.split=test"])
    with pytest.raises(TaskLoadError, match="envs.arc_agi: its own tasks: config.split: unknown 'test'"):
        own_tasks("arc_agi", cfg.envs["arc_agi"], None)
