"""The output directory: one run at a time (an flock that dies with its holder), an atomic manifest, and
one-line errors for a manifest that is empty or corrupt or a disk that stops taking rows."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from gym_ray.cli import main
from gym_ray.collect.api import _open_run, check_output_dir
from gym_ray.collect.identity import run_identity
from gym_ray.collect.sink import ParquetSink, ResumeError
from gym_ray.config import validate_config
from gym_ray.rundir import RunDir, RunDirError, hold, part_files, read_rollout_table
from gym_ray.rundir.location import MANIFEST, META_DIR
from gym_ray.rundir.lock import LOCK_FILE
from gym_ray.types import ROLLOUT_SCHEMA, Task

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = run_identity(validate_config({"envs": {"weather": {"server": "gym_ray_env_weather.server:Weather"}},
                                         "collect": {"num_repeats": 2}}),
                        [Task(task_id="t0", env="weather", prompt=[{"role": "user", "content": "weather in Paris?"}])])

HOLDER = textwrap.dedent("""
    import sys, time
    from gym_ray.rundir import hold
    with hold(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def _locked_elsewhere(path: Path) -> bool:
    """Whether another open file description holds the flock (what a second process would see)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _weather_config(tmp_path: Path) -> Path:
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"task_id": f"t{i}", "prompt": "weather in Paris?"}) + "\n" for i in range(2)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{kind: scripted, hosting: local, replies: ["It is sunny, 21 C."]}}
        envs:
          weather: {{server: "gym_ray_env_weather.server:Weather", hosting: local, data: ["{data}"]}}
        collect: {{output_dir: "{tmp_path / 'out'}", num_repeats: 2}}
    """))
    return cfg


def test_a_second_run_fails_at_once_naming_the_holder_and_resume_works_after_it_dies(
        tmp_path, serve_http_port, capsys):
    cfg, out = _weather_config(tmp_path), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        assert main(["run", str(cfg)]) == 2
        assert time.monotonic() - t0 < 10  # refused before Ray, Serve or any actor
        [line] = capsys.readouterr().err.strip().splitlines()
        assert f"{out}: another run is writing into this output directory" in line
        assert f"pid {holder.pid} on {socket.gethostname()}" in line and "runlock" not in line
        assert not part_files(out)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops its lock
        holder.wait()
    assert main(["run", str(cfg), "--resume"]) == 0, capsys.readouterr().err[-3000:]
    assert read_rollout_table(out).num_rows == 4
    assert not _locked_elsewhere(out / LOCK_FILE)  # released when the run ended


def test_lock_records_its_holder_and_nested_holds_share_it(tmp_path):
    out = tmp_path / "out"
    with hold(out):
        info = json.loads((out / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["started_at"] and info["command"] == " ".join(sys.argv)
        with hold(out):  # the CLI holds it around collect_to_dir, which holds it too
            assert _locked_elsewhere(out / LOCK_FILE)
        assert _locked_elsewhere(out / LOCK_FILE)
    assert not _locked_elsewhere(out / LOCK_FILE)
    assert [p.name for p in out.iterdir()] == [META_DIR]  # the write probe cleans up after itself


def test_busy_directory_refuses_a_second_holder(tmp_path):
    out = tmp_path / "out"
    (out / META_DIR).mkdir(parents=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": 4242, "host": "node-7", "started_at": "2026-12-01 10:00:00",
                                             "command": "gym-ray run x.yaml"}))
    fd = os.open(out / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: what another process would hold
    try:
        with pytest.raises(RunDirError, match=r"pid 4242 on node-7, started 2026-12-01 10:00:00: gym-ray run x.yaml"):
            with hold(out):
                pass
    finally:
        os.close(fd)


def test_manifest_is_replaced_atomically(tmp_path, monkeypatch):
    """A run killed while writing `.gym_ray/run.json` leaves the previous manifest whole and no temp file."""
    out = tmp_path / "out"
    RunDir.of(out).meta(MANIFEST).parent.mkdir(parents=True)
    old = '{"run_id": "old", "num_repeats": 2, "num_tasks": 1}\n'
    RunDir.of(out).meta(MANIFEST).write_text(old)

    def killed(fd):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", killed)
        with pytest.raises(KeyboardInterrupt):
            _open_run(out, False, IDENTITY)
    assert RunDir.of(out).meta(MANIFEST).read_text() == old
    assert [p.name for p in RunDir.of(out).meta(MANIFEST).parent.iterdir()] == [MANIFEST]
    run_id, _ = _open_run(out, False, IDENTITY)
    assert json.loads(RunDir.of(out).meta(MANIFEST).read_text()) == {"run_id": run_id, "num_repeats": 2, "num_tasks": 1,
                                                                "identity": IDENTITY}
    assert _open_run(out, True, IDENTITY) == (run_id, {})


@pytest.mark.parametrize(("text", "why"), [("", "the file is empty"), ('{"run_id": "ab', "JSONDecodeError"),
                                           ("[1, 2]", "TypeError"), ('{"num_repeats": 2}', "KeyError")])
def test_corrupt_manifest_on_resume_is_one_line_naming_the_file(tmp_path, text, why):
    RunDir.of(tmp_path).meta(MANIFEST).parent.mkdir()
    RunDir.of(tmp_path).meta(MANIFEST).write_text(text)
    with pytest.raises(ResumeError) as e:
        check_output_dir(tmp_path, True, IDENTITY)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{RunDir.of(tmp_path).meta(MANIFEST)}: not a valid run manifest ({why}")
    assert "delete it to resume" in msg


def _group(group: str):
    """Two rows of one group; the sink neither reads nor checks the other columns."""
    return pa.Table.from_pylist([{"group_id": group, "rollout_index": i, "group_size": 2} for i in range(2)],
                                schema=ROLLOUT_SCHEMA)


def test_disk_full_mid_run_is_one_line_and_keeps_finished_files(tmp_path, monkeypatch):
    sink = ParquetSink(tmp_path, rows_per_file=2)
    sink.write(_group("g1"))
    [first] = part_files(tmp_path)

    def full(table, where):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("gym_ray.collect.sink.pq.write_table", full)
    with pytest.raises(RunDirError, match=r"cannot write rollouts: No space left on device.*--resume") as e:
        sink.write(_group("g2"))
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no half-written temp file
