"""Bad input through `gym-ray run`: one line naming the file and the line / field, exit 2, no traceback.

Every case fails before Ray starts, so none of them needs a cluster.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from gym_ray.cli import main

ROOT = Path(__file__).resolve().parent.parent
WEATHER = "gym_ray_env_weather.server:Weather"


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gym-ray: error: "), lines
    return lines[0]


def config(tmp_path: Path, data: list[Path | str], server: str = WEATHER, hosting: str = "local") -> Path:
    """One weather env (scripted local policy), its output dir inside tmp_path."""
    p = tmp_path / "run.yaml"
    p.write_text(f"model: {{kind: scripted, hosting: local}}\n"
                 f"envs:\n  weather:\n    server: {server}\n    hosting: {hosting}\n    data: {json.dumps([str(d) for d in data])}\n"
                 f"collect: {{output_dir: {tmp_path / 'out'}}}\n")
    return p


def good_tasks(tmp_path: Path) -> Path:
    p = tmp_path / "good.jsonl"
    p.write_text('{"task_id": "a", "prompt": "hi"}\n')
    return p


def run(*argv: str | Path) -> int:
    return main(["run", *map(str, argv)])


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("envs:\n  weather:\n    server: [unclosed\n")
    assert run(cfg) == 2
    line = one_error_line(capsys)
    assert "bad.yaml: line 4" in line and "not valid YAML" in line and "at line 3" in line


def test_non_utf8_task_file_names_file_and_line(tmp_path, capsys):
    data = tmp_path / "tasks.jsonl"
    data.write_bytes(b'{"task_id": "a", "prompt": "hi"}\n{"task_id": "b", "prompt": "caf\xe9"}\n')
    assert run(config(tmp_path, [data])) == 2
    line = one_error_line(capsys)
    assert "tasks.jsonl: line 2: not UTF-8" in line


def test_corrupt_parquet_task_file_is_named(tmp_path, capsys):
    data = tmp_path / "tasks.parquet"
    data.write_bytes(b"this is not parquet\n")
    assert run(config(tmp_path, [data])) == 2
    assert "tasks.parquet: not a readable Parquet file" in one_error_line(capsys)


def test_empty_task_file_is_named(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert run(config(tmp_path, [good_tasks(tmp_path), empty])) == 2
    assert "empty.jsonl: no task rows" in one_error_line(capsys)


def test_row_naming_an_unknown_env_names_file_and_line(tmp_path, capsys):
    data = tmp_path / "tasks.jsonl"
    data.write_text('{"task_id": "a", "prompt": "hi"}\n{"task_id": "b", "env": "nowhere", "prompt": "hi"}\n')
    assert run(config(tmp_path, [data])) == 2
    line = one_error_line(capsys)
    assert "tasks.jsonl: line 2: env 'nowhere' is not defined" in line and "weather" in line


def test_duplicate_task_ids_name_both_files_and_lines(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"task_id": "x", "prompt": "hi"}\n')
    b.write_text('{"task_id": "y", "prompt": "hi"}\n{"task_id": "x", "prompt": "again"}\n')
    assert run(config(tmp_path, [a, b])) == 2
    line = one_error_line(capsys)
    assert f"{b}: line 2: task_id 'x'" in line and f"{a}: line 1" in line


def test_utf8_bom_is_accepted(tmp_path, capsys):
    """The BOM'd first row parses; the run then stops at the second row's (deliberate) unknown env."""
    data = tmp_path / "tasks.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"task_id": "a", "prompt": "hi"}\n{"task_id": "b", "env": "nowhere", "prompt": "x"}\n')
    assert run(config(tmp_path, [data])) == 2
    assert "tasks.jsonl: line 2: env 'nowhere'" in one_error_line(capsys)


def test_bad_server_with_hosting_serve_fails_before_the_deploy(tmp_path, capsys):
    cfg = config(tmp_path, [good_tasks(tmp_path)], server="gym_ray_env_nope:Weather", hosting="serve")
    assert run(cfg) == 2
    line = one_error_line(capsys)
    assert "run.yaml: envs.weather.server:" in line and "cannot import module 'gym_ray_env_nope'" in line


def test_empty_run_manifest_on_resume_names_the_file(tmp_path, capsys):
    (tmp_path / "out" / ".gym_ray").mkdir(parents=True)
    (tmp_path / "out" / ".gym_ray" / "run.json").write_text("")
    assert run(config(tmp_path, [good_tasks(tmp_path)]), "--resume") == 2
    line = one_error_line(capsys)
    assert "out/.gym_ray/run.json: not a valid run manifest (the file is empty)" in line and "delete it" in line


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in: chmod does it for a user; root writes anywhere
    except filesystems such as sysfs."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d
    d = Path("/sys/kernel")
    try:
        (d / "gym_ray_probe").touch()
    except OSError:
        return d
    pytest.skip("no read-only directory available to root here")


def test_read_only_output_dir_fails_before_the_deploy(tmp_path, capsys):
    ro = _read_only_dir(tmp_path)
    assert run(config(tmp_path, [good_tasks(tmp_path)]), f"collect.output_dir={ro}") == 2
    line = one_error_line(capsys)
    assert f"collect.output_dir {ro}: cannot write there" in line


def test_full_output_dir_fails_before_the_deploy(tmp_path, capsys, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # the probe write is synced: where a full disk shows
    assert run(config(tmp_path, [good_tasks(tmp_path)])) == 2
    line = one_error_line(capsys)
    assert f"collect.output_dir {tmp_path / 'out'}: cannot write there: No space left on device" in line
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".gym_ray"]  # the probe file is gone
