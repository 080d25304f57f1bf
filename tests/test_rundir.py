"""The run directory as one value: a path or an `s3://` prefix parsed once, and the same readers and writers
on both (the parts, the manifest, the lock record, metrics), here against a local S3 server (moto)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ports import free_port

from gym_ray.collect.api import _open_run, check_output_dir
from gym_ray.collect.identity import run_identity
from gym_ray.collect.metrics import metrics_from_dir, write_metrics
from gym_ray.collect.sink import ParquetSink, done_groups
from gym_ray.config import validate_config
from gym_ray.rundir import RunDir, RunDirError, hold, read_rollout_table, read_run
from gym_ray.rundir.location import LOCK, MANIFEST, METRICS
from gym_ray.types import Rollout, Task, rollouts_to_arrow

BUCKET = "gym-ray-runs"
CFG = validate_config({"envs": {"weather": {"server": "gym_ray_env_weather.server:Weather"}},
                       "collect": {"num_repeats": 2}})
TASKS = [Task(task_id=f"t{i}", env="weather", prompt=[{"role": "user", "content": "weather in Paris?"}]) for i in range(3)]


def test_one_parse_says_where_and_how():
    s3 = RunDir.of("s3://bucket/runs/a/")
    assert s3.remote and str(s3) == "s3://bucket/runs/a" and s3.name == "a"
    assert s3.meta(MANIFEST) == "s3://bucket/runs/a/.gym_ray/run.json" and s3.manifest == s3.meta(MANIFEST)
    assert RunDir.of(s3) is s3
    local = RunDir.of(Path("runs/a"))
    assert not local.remote and local == RunDir.of("runs/a") == RunDir.local("runs/a")
    assert local.meta(LOCK) == Path("runs/a/.gym_ray/lock") and local.name == "a"
    assert not RunDir.of("file:///tmp/x").remote  # file:// is a local path, as before
    with pytest.raises(ValueError, match="not a local directory"):
        _ = s3.path


@pytest.fixture(scope="module")
def s3_env():
    """A local S3 server (moto) with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def _group(task: str, rid: str) -> object:
    return rollouts_to_arrow([Rollout(rollout_id=f"{rid}-{i}", group_id=rid, env="weather", task_id=task,
                                      rollout_index=i, group_size=2, reward=float(i)) for i in range(2)])


def test_a_run_on_s3_writes_and_reads_back_like_a_local_one(s3_env, monkeypatch):
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    uri = f"s3://{BUCKET}/runs/r1/"
    identity = run_identity(CFG, TASKS)
    with hold(uri) as run:
        assert run.remote and str(run) == uri.rstrip("/")
        assert json.loads(run.read_bytes(run.meta(LOCK)))["pid"] > 0  # the run recorded itself
        run_id, done = _open_run(run, False, identity)
        assert done == {}
        sink = ParquetSink(run, rows_per_file=2)
        for task in ("t0", "t1"):
            sink.write(_group(task, f"g-{task}"))
        sink.close()
        write_metrics(metrics_from_dir(run), run)

    parts = run.parts()
    assert [str(p).rsplit("/", 1)[-1][:11] for p in parts] == ["part-000000", "part-000001"]
    assert sorted(run.list_names()) == sorted(str(p).rsplit("/", 1)[-1] for p in parts)  # nothing half-written
    assert read_rollout_table(uri).num_rows == 4 and read_run(uri, ["reward"])["reward"].to_pylist() == [0, 1, 0, 1]
    assert json.loads(run.read_bytes(run.meta(METRICS)))["overall"]["rollouts"] == 4
    assert json.loads(run.read_bytes(run.manifest))["run_id"] == run_id

    assert check_output_dir(uri, True, identity) == run_id  # resume reads the manifest and the groups back
    assert set(done_groups(uri)) == {("weather", "t0"), ("weather", "t1")}
    assert ParquetSink(uri).flush() is None and RunDir.of(uri).next_part_index() == 2


def test_a_bucket_that_takes_no_writes_is_one_line(s3_env, monkeypatch):
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RunDirError, match=r"collect.output_dir s3://no-such-bucket/x: cannot write there") as e:
        with hold("s3://no-such-bucket/x"):
            pass
    assert "\n" not in str(e.value)


def test_rows_written_before_the_tree_columns_read_with_their_defaults(tmp_path):
    """A run written before tree rollouts existed stays readable (report, check, resume): its rows read as
    single-episode rows; a file missing any other column is still not rollout rows."""
    import pyarrow.parquet as pq

    from gym_ray.rundir import RunInputError
    from gym_ray.types import ROLLOUT_SCHEMA

    row = Rollout(rollout_id="r0", group_id="g", task_id="t0", env="weather", rollout_index=0, group_size=1,
                  response_token_ids=[1, 2], response_loss_mask=[1, 1], response_logprobs=[0.0, 0.0],
                  gen_span_starts=[0], gen_span_ends=[2], call_finish_reasons=["stop"], gen_policy_versions=[0],
                  reward=1.0, num_turns=1)
    table = rollouts_to_arrow([row])
    old = table.drop_columns(["tree_id", "node_id", "parent_node_id", "branch_token_offset"])
    pq.write_table(old, tmp_path / "part-000000-a.parquet")
    back = read_rollout_table(tmp_path)
    assert back.schema == ROLLOUT_SCHEMA and back.to_pylist() == table.to_pylist()
    pq.write_table(old.drop_columns(["reward"]), tmp_path / "part-000001-b.parquet")
    with pytest.raises(RunInputError, match="no column reward"):
        read_rollout_table(tmp_path)
