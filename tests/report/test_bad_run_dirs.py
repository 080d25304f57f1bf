"""`gym-ray check / report / compare / metrics` on a run directory that is not what they expect: a part file
that cannot be read as rollout rows is one line naming the file and what is wrong (exit 2), so is a place in
the run directory they cannot write; a broken manifest or config only costs what needs it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gym_ray.cli import main
from gym_ray.rundir import part_files


def _replace(part: Path, table: pa.Table) -> None:
    pq.write_table(table, part)


def _null_status(part: Path) -> None:
    t = pq.read_table(part)
    i = t.schema.get_field_index("status")
    _replace(part, t.set_column(i, "status", pa.array([None] * t.num_rows, pa.string())))


def _as_dir(part: Path) -> None:
    part.unlink()
    part.mkdir()


# how to break the run's part file -> what the error line says about it
PART_BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "another_schema": (lambda p: _replace(p, pa.table({"a": [1, 2], "b": ["x", "y"]})),
                       "not rollout rows: no column "),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a readable Parquet file"),
    "empty_file": (lambda p: p.write_bytes(b""), "not a readable Parquet file"),
    "not_parquet": (lambda p: p.write_text("task_id,reward\nweather-0,1\n"), "not a readable Parquet file"),
    "missing_columns": (lambda p: _replace(p, pq.read_table(p).drop_columns(["reward", "status"])),
                        "not rollout rows: no column "),
    "null_status": (_null_status, "row 0: status is null"),
    "a_directory": (_as_dir, "not a readable Parquet file"),
}
COMMANDS = ["check", "report", "compare", "metrics"]


def _copy(run: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    return bad


def _argv(command: str, good: Path, bad: Path) -> list[str]:
    return ["compare", str(good), str(bad)] if command == "compare" else [command, str(bad)]


def _one_error_line(capsys) -> str:
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err and printed.out == ""
    [line] = printed.err.splitlines()
    assert line.startswith("gym-ray: error: ")
    return line.removeprefix("gym-ray: error: ")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(PART_BREAKS))
def test_a_part_that_is_not_rollout_rows_is_one_line_and_exit_2(case, command, mixed_run, tmp_path, capsys):
    bad = _copy(mixed_run, tmp_path)
    [part] = part_files(bad)
    breaks, says = PART_BREAKS[case]
    breaks(part)
    assert main(_argv(command, mixed_run, bad)) == 2
    assert _one_error_line(capsys).startswith(f"{part}: {says}")


# a place the command writes that cannot be written -> the commands that write there
UNWRITABLE = {
    "metrics_json_is_a_directory": (".gym_ray/metrics.json", ["metrics"]),
    "meta_dir_is_a_file": (".gym_ray", ["check", "report", "metrics"]),
}


@pytest.mark.parametrize("case,command", [(c, cmd) for c, (_, cmds) in UNWRITABLE.items() for cmd in cmds])
def test_a_place_the_command_cannot_write_is_one_line_and_exit_2(case, command, mixed_run, tmp_path, capsys):
    bad = _copy(mixed_run, tmp_path)
    where = bad / UNWRITABLE[case][0]
    if where.is_dir():
        shutil.rmtree(where)
        where.write_text("not a directory")
    else:
        where.unlink()
        where.mkdir()
    assert main(_argv(command, mixed_run, bad)) == 2
    assert _one_error_line(capsys).startswith(f"{where}: cannot write (")


# a broken `.gym_ray/` file -> (its new bytes, the commands that read it, what the report shows instead)
BROKEN_META = {
    "manifest_not_utf8": ("run.json", b"\xff\xfe\x00 not json", ["report"], "run id ?"),
    "manifest_a_list": ("run.json", b"[1, 2]", ["report"], "run id ?"),
    "manifest_num_tasks_a_string": ("run.json", json.dumps({"run_id": "r", "num_repeats": 4, "num_tasks": "6"})
                                    .encode(), ["check", "report"], "skipped: missing_groups: "),
    "config_not_utf8": ("config.json", b"\xff\xfe\x00 not json", ["report"], "(no readable .gym_ray/config.json)"),
}


@pytest.mark.parametrize("case,command", [(c, cmd) for c, (_, _, cmds, _) in BROKEN_META.items() for cmd in cmds])
def test_a_broken_manifest_or_config_costs_only_what_needs_it(case, command, mixed_run, tmp_path, capsys):
    bad = _copy(mixed_run, tmp_path)
    name, content, _, shown = BROKEN_META[case]
    (bad / ".gym_ray" / name).write_bytes(content)
    html = tmp_path / "report.html"
    assert main([command, str(bad), *(["-o", str(html)] if command == "report" else [])]) == 0
    out = capsys.readouterr().out
    if command == "report":
        assert out.strip() == f"report: {html}"
        page = html.read_text()
        assert shown in page and "<script>" in page
    else:  # the number of tasks to compare the rows with is unknown: said, not guessed
        assert f"skipped: missing_groups: {bad / '.gym_ray' / name} has num_tasks '6'" in out
        assert "contract holds: 0 of 24 rollouts flagged" in out
