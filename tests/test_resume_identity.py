"""`--resume` completes the run the directory holds, and only that run: other tasks or a config that changes
what the rows are, and a part file that cannot be read, are refused in one line before Ray starts, while
operational settings (concurrency) may change."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from gym_ray.cli import main
from gym_ray.collect.api import _open_run, check_output_dir, load_run_tasks
from gym_ray.collect.identity import run_identity
from gym_ray.collect.sink import ParquetSink, ResumeError
from gym_ray.config import load_config, validate_config
from gym_ray.rundir import RunDir, part_files, read_rollout_table
from gym_ray.rundir.location import MANIFEST
from gym_ray.types import Rollout, Task, rollouts_to_arrow

WEATHER = "gym_ray_env_weather.server:Weather"


def _tasks_file(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"task_id": i, "prompt": f"weather in {i}?"}) + "\n" for i in ids))
    return path


def _config(tmp_path: Path, data: list[Path]) -> Path:
    cfg = tmp_path / f"run-{len(data)}.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{kind: scripted, hosting: local, replies: ["It is sunny, 21 C."]}}
        envs:
          weather: {{server: "{WEATHER}", hosting: local, data: {json.dumps([str(d) for d in data])}}}
        collect: {{output_dir: "{tmp_path / 'out'}", num_repeats: 2}}
    """))
    return cfg


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gym-ray: error: "), lines
    return lines[0]


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if the CLI gets as far as connecting to Ray."""
    def connect_ray(*_):
        raise AssertionError("the CLI connected to Ray before refusing the directory")

    monkeypatch.setattr("gym_ray.launch.deploy.connect_ray", connect_ray)


def test_resume_with_other_tasks_or_config_is_refused_before_ray(tmp_path, serve_http_port, capsys, monkeypatch):
    first = _tasks_file(tmp_path / "a.jsonl", ["Paris", "Oslo"])
    cfg, out = _config(tmp_path, [first]), tmp_path / "out"
    assert main(["run", str(cfg)]) == 0, capsys.readouterr().err[-3000:]
    assert read_rollout_table(out).num_rows == 4
    capsys.readouterr()
    files = part_files(out)

    with monkeypatch.context() as m:
        m.setattr("gym_ray.launch.deploy.connect_ray", lambda *_: pytest.fail("connected to Ray"))
        more = _config(tmp_path, [first, _tasks_file(tmp_path / "b.jsonl", ["Rome", "Lima", "Kyiv"])])
        assert main(["run", str(more), "--resume"]) == 2
        line = _one_error_line(capsys)
        assert f"{out}: --resume refused: the tasks differ: the run has 2 tasks" in line and "these are 5" in line

        assert main(["run", str(cfg), "--resume", "collect.sampling.temperature=0.5"]) == 2
        assert "the config differs at collect.sampling.temperature: 1.0 -> 0.5" in _one_error_line(capsys)
        assert main(["run", str(cfg), "--resume", "envs.weather.agent.max_turns=3"]) == 2
        assert "the config differs at envs.weather.agent.max_turns: 8 -> 3" in _one_error_line(capsys)
        assert main(["run", str(cfg), "--resume", "collect.num_repeats=3"]) == 2
        assert "written with num_repeats=2, resumed with 3" in _one_error_line(capsys)
    assert part_files(out) == files  # nothing was written into the run

    # how fast and where the run goes is not what the run is
    assert main(["run", str(cfg), "--resume", "collect.concurrency=3"]) == 0, capsys.readouterr().err[-3000:]
    assert "2 of 2 groups already written" in capsys.readouterr().out
    assert read_rollout_table(out).num_rows == 4


def _part_of_another_schema(path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["weather in Paris?"], "answer": ["sunny"]}), path)


def _truncated_part(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "why"), [(_truncated_part, "not a readable Parquet file"),
                                             (_part_of_another_schema, "not rollout rows: no column")])
def test_resume_over_a_damaged_part_is_one_line_before_ray(tmp_path, capsys, no_ray, damage, why):
    cfg = _config(tmp_path, [_tasks_file(tmp_path / "a.jsonl", ["Paris", "Oslo"])])
    out = tmp_path / "out"
    loaded = load_config(cfg)
    _open_run(out, False, run_identity(loaded, load_run_tasks(loaded)))
    sink = ParquetSink(out, rows_per_file=2)
    for group in ("g1", "g2"):  # two finished parts of whole groups
        sink.write(rollouts_to_arrow([Rollout(rollout_id=f"{group}-{i}", group_id=group, env="weather", task_id=group,
                                              rollout_index=i, group_size=2) for i in range(2)]))
    good, bad = part_files(out)
    damage(bad)
    assert main(["run", str(cfg), "--resume"]) == 2
    line = _one_error_line(capsys)
    assert f"{bad}: {why}" in line and "move it out of the directory" in line and good.name not in line


IDENTITY_CONFIG = {"model": {"kind": "scripted", "replies": ["sunny"]},
                   "envs": {"weather": {"server": WEATHER, "config": {"units": "C"}}},
                   "collect": {"num_repeats": 2}}
TASKS = [Task(task_id=f"t{i}", env="weather", prompt=[{"role": "user", "content": f"city {i}"}]) for i in range(3)]


def _with(change: dict, base: dict = IDENTITY_CONFIG) -> dict:
    out = json.loads(json.dumps(base))
    for path, value in change.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


@pytest.mark.parametrize(("change", "tasks", "why"), [
    ({}, TASKS[:2], "the tasks differ: the run has 3 tasks"),
    ({}, [TASKS[0], TASKS[1], TASKS[2].model_copy(update={"verifier_metadata": {"answer": "rain"}})],
     "the tasks differ"),
    ({"model.replies": ["rain"]}, TASKS, 'the config differs at model.replies: ["sunny"] -> ["rain"]'),
    ({"envs.weather.config.units": "F"}, TASKS, 'envs.weather.config.units: "C" -> "F"'),
    ({"envs.other": {"server": WEATHER}}, TASKS, "envs.other.agent.cls: (not set) ->"),
    ({"models.judge": {"kind": "scripted"}}, TASKS, "the config differs at models.judge.chat_template: (not set)"),
])
def test_what_differs_is_named(tmp_path, change, tasks, why):
    _open_run(tmp_path, False, run_identity(validate_config(IDENTITY_CONFIG), TASKS))
    with pytest.raises(ResumeError) as e:
        check_output_dir(tmp_path, True, run_identity(validate_config(_with(change)), tasks))
    assert why in str(e.value) and "\n" not in str(e.value)


def test_operational_settings_and_task_order_do_not_change_the_run(tmp_path):
    run_id, _ = _open_run(tmp_path, False, run_identity(validate_config(IDENTITY_CONFIG), TASKS))
    moved = _with({"collect.concurrency": 3, "collect.num_agents": 2, "collect.output_dir": "elsewhere",
                   "envs.weather.num_replicas": 2, "envs.weather.hosting": "local", "model.hosting": "local"})
    assert check_output_dir(tmp_path, True, run_identity(validate_config(moved), TASKS[::-1])) == run_id
    assert json.loads(RunDir.of(tmp_path).meta(MANIFEST).read_text())["identity"]["tasks"]["count"] == 3
