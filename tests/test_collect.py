"""Collection: groups, failure rows, the Parquet sink, metrics and resume, with real Ray actors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import collect_fakes
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from collect_fakes import FakeAgent, FakeEnv, FakePolicy

from gym_ray.collect.api import Collector
from gym_ray.collect.metrics import MetricsAccumulator, env_metrics, format_table, metrics_from_dir
from gym_ray.collect.plan import plan_groups
from gym_ray.collect.sink import ParquetSink, ResumeError, done_groups
from gym_ray.config import validate_config
from gym_ray.rundir import part_files, read_rollout_table
from gym_ray.types import ROLLOUT_SCHEMA, Rollout, Task, rollouts_to_arrow

ray.cloudpickle.register_pickle_by_value(collect_fakes)
ROOT = Path(__file__).resolve().parent.parent


def _task(i: int, env: str = "fake", **meta) -> Task:
    return Task(task_id=f"t{i}", env=env, prompt=[{"role": "user", "content": f"question {i}"}],
                verifier_metadata=meta)


def _config(tmp_path: Path, **collect) -> object:
    return validate_config({
        "envs": {"fake": {"server": "unused:Unused"}},
        "collect": {"output_dir": str(tmp_path / "out"), "num_repeats": 2, "concurrency": 8, **collect},
    })


def _collector(cfg, default_model_path: str) -> Collector:
    return Collector(cfg, FakePolicy(default_model_path), envs={"fake": FakeEnv()},
                     agent_classes={"fake": FakeAgent})


def _row(group: str, idx: int, size: int = 2, reward: float = 1.0, status: str = "ok", env: str = "e") -> Rollout:
    return Rollout(rollout_id=f"{group}-{idx}", group_id=group, task_id=group, env=env, rollout_index=idx,
                   group_size=size, response_token_ids=[1, 2], response_loss_mask=[1, 1],
                   response_logprobs=[0.0, 0.0], gen_span_starts=[0], gen_span_ends=[2],
                   call_finish_reasons=["stop"], gen_policy_versions=[0], reward=reward, status=status,
                   num_turns=1, **({} if status == "ok" else {"failure_stage": "agent", "failure_kind": "exception"}))


# -- planning and metrics (no Ray) -----------------------------------------------------------------

def test_plan_groups_are_complete_and_stable():
    tasks = [_task(0), _task(1)]
    a = plan_groups(tasks, 3, "run-a")
    assert [g.group_size for g in a] == [3, 3]
    assert a[0].group_id == plan_groups(tasks, 3, "run-a")[0].group_id
    assert a[0].group_id != plan_groups(tasks, 3, "run-b")[0].group_id
    with pytest.raises(ValueError, match="t0.*twice"):
        plan_groups([_task(0), _task(0)], 2, "r")


def test_metrics_per_env_pass_at_k_and_failures():
    rows = [_row("a", 0, 4, 1.0), _row("a", 1, 4, 0.0), _row("a", 2, 4, 0.0),
            _row("a", 3, 4, 1.0, status="timeout"),  # a failed row never passes, whatever its reward
            _row("b", 0, 4, 1.0, env="f"), _row("b", 1, 4, 1.0, env="f"), _row("b", 2, 4, 1.0, env="f"),
            _row("b", 3, 4, 0.5, env="f")]
    acc = MetricsAccumulator()
    acc.add(rollouts_to_arrow(rows[:3]))
    acc.add(rollouts_to_arrow(rows[3:]))
    s = acc.summary()
    e, f = s["per_env"]["e"], s["per_env"]["f"]
    assert e["rollouts"] == 4 and e["statuses"] == {"ok": 3, "timeout": 1}
    assert e["pass@1"] == pytest.approx(0.25) and e["pass@2"] == pytest.approx(1 - 3 / 6)
    assert f["pass@1"] == pytest.approx(0.75) and f["pass@4"] == 1.0
    assert s["overall"]["pass@1"] == pytest.approx(0.5)
    assert s["overall"]["mean_reward"] == pytest.approx((1 + 3.5) / 8)  # the timeout counts 0
    assert s["overall"]["mean_reward_ok"] == pytest.approx((1 + 3.5) / 7)
    assert s["overall"]["generated_tokens"] == 16


def test_each_env_leads_with_its_benchmarks_metric():
    """The headline is the env's own metric: pass@1, the share of episodes at the pass threshold (a failed
    episode never counts), or the mean reward (graded scores); env_metrics reads it off the server class."""
    rows = [_row("a", 0, 2, 1.0), _row("a", 1, 2, 0.5), _row("b", 0, 2, 1.0, env="f"),
            _row("b", 1, 2, 1.0, env="f", status="timeout"), _row("c", 0, 2, 0.5, env="g"),
            _row("c", 1, 2, 0.25, env="g")]
    acc = MetricsAccumulator(metrics={"e": "pass@k", "f": "accuracy"})
    acc.add(rollouts_to_arrow(rows))
    s = acc.summary()["per_env"]
    assert (s["e"]["metric"], s["e"]["score"]) == ("pass@k", pytest.approx(0.5))
    assert (s["f"]["metric"], s["f"]["score"]) == ("accuracy", pytest.approx(0.5))
    assert (s["g"]["metric"], s["g"]["score"]) == ("mean_reward", pytest.approx(0.375))
    assert "accuracy 0.500" in format_table(acc.summary())
    found = env_metrics({"code": "gym_ray_env_code.server:Code", "judge": "gym_ray_env_judge.server:Judge",
                         "gone": "not_installed.server:Env"})
    assert found == {"code": "pass@k", "judge": "mean_reward", "gone": "mean_reward"}


# -- the sink ----------------------------------------------------------------------------------------

def test_sink_rolls_by_rows_and_time_atomically(tmp_path):
    sink = ParquetSink(tmp_path, rows_per_file=4, roll_seconds=0.3)
    sink.write(rollouts_to_arrow([_row("g1", 0), _row("g1", 1)]))
    assert part_files(tmp_path) == []  # buffered, nothing visible yet
    sink.write(rollouts_to_arrow([_row("g2", 0), _row("g2", 1)]))
    assert len(part_files(tmp_path)) == 1  # 4 rows -> rolled
    sink.write(rollouts_to_arrow([_row("g3", 0), _row("g3", 1)]))
    time.sleep(0.35)
    sink.maybe_roll()
    files = part_files(tmp_path)
    assert len(files) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
    # mid-run, a half-written file (hidden temp name) is invisible to readers
    (tmp_path / ".part-000009-deadbeef.parquet.tmp").write_bytes(b"PAR1 not finished")
    for f in files:
        assert pq.read_schema(f) == ROLLOUT_SCHEMA
    assert pq.read_table(tmp_path).num_rows == 6  # the dataset reader skips the hidden temp file
    assert sorted(set(pq.read_table(tmp_path, columns=["group_id"])["group_id"].to_pylist())) == ["g1", "g2", "g3"]
    assert read_rollout_table(tmp_path).schema == ROLLOUT_SCHEMA


def test_done_groups_refuses_incomplete_groups(tmp_path):
    sink = ParquetSink(tmp_path, rows_per_file=100)
    sink.write(rollouts_to_arrow([_row("g1", 0), _row("g1", 1), _row("g2", 0)]))
    sink.close()
    with pytest.raises(ResumeError, match="g2 has 1 rollouts of 2"):
        done_groups(tmp_path)


# -- collection with real actors ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def collector(tmp_path_factory, ray_cluster, default_model_path):
    """Two agent actors shared by the tests below (an actor start costs seconds here)."""
    cfg = _config(tmp_path_factory.mktemp("shared"), num_repeats=2, episode_timeout_s=1.0, max_retries=2,
                  num_agents=2, rows_per_file=6)
    with _collector(cfg, default_model_path) as col:
        yield col


def test_every_rollout_ends_as_one_row_with_a_status(collector):
    tasks = [
        _task(0), _task(1, reward=0.0),
        _task(2, sleep_s=30),                # -> timeout
        _task(3, env_fail=True),             # -> env_error
        _task(4, infra_fail_attempts=1),     # -> retried, then ok
        _task(5, infra_fail_attempts=9),     # -> infra_error after max_retries
        _task(6, crash=True),                # -> aborted (agent bug), not retried
        _task(7, env="nowhere"),             # -> env_error naming the configured envs
    ]
    groups = collector.collect_sync(tasks)
    assert [g.task_id for g in groups] == [t.task_id for t in tasks]
    status = {}
    for g in groups:
        assert sorted(r.rollout_index for r in g.rollouts) == [0, 1]
        assert len({r.rollout_id for r in g.rollouts}) == 2
        assert len({r.group_id for r in g.rollouts}) == 1
        status[g.task_id] = {r.status.value for r in g.rollouts}
        for r in g.rollouts:
            r.check_invariants()
            assert r.mask_sample == (r.status.value != "ok")
            assert json.loads(r.task_json)["task_id"] == g.task_id
    assert status == {"t0": {"ok"}, "t1": {"ok"}, "t2": {"timeout"}, "t3": {"env_error"}, "t4": {"ok"},
                      "t5": {"infra_error"}, "t6": {"aborted"}, "t7": {"env_error"}}
    rows = {g.task_id: g.rollouts[0] for g in groups}
    assert rows["t1"].reward == 0.0 and rows["t0"].reward == 1.0
    assert "database down" in rows["t3"].error
    assert "3 attempts" in rows["t5"].error
    assert "KeyError" in rows["t6"].error
    assert "nowhere" in rows["t7"].error and "fake" in rows["t7"].error
    assert rows["t0"].tokenizer_fingerprint and rows["t2"].tokenizer_fingerprint == rows["t0"].tokenizer_fingerprint
    # The failure contract: attempts are counted, every failed row says where, what and whether delivered.
    assert (rows["t0"].attempt, rows["t4"].attempt, rows["t5"].attempt) == (0, 1, 2)
    failures = {t: (r.failure_stage, r.failure_kind) for t, r in rows.items() if r.status != "ok"}
    assert failures == {"t2": ("agent", "timeout"), "t3": ("agent", "exception"), "t5": ("agent", "unavailable"),
                        "t6": ("agent", "exception"), "t7": ("admission", "unknown_env")}
    assert rows["t5"].failure_delivery == "possibly_delivered" and rows["t7"].failure_delivery == "not_sent"


def test_stream_groups_yields_complete_groups_as_they_finish(collector):
    tasks = [_task(i) for i in range(10)]

    async def main():
        seen = []
        async for g in collector.stream_groups(tasks, num_repeats=3):
            assert sorted(r.rollout_index for r in g.rollouts) == [0, 1, 2]
            seen.append(g.task_id)
        return seen

    assert sorted(asyncio.run(main())) == sorted(t.task_id for t in tasks)


def test_dead_agent_actor_is_replaced_and_its_groups_rerun(tmp_path, ray_cluster, default_model_path):
    cfg = _config(tmp_path, num_repeats=2, concurrency=4, num_agents=1, max_retries=2)
    tasks = [_task(i, sleep_s=0.5) for i in range(6)]

    async def main():
        with _collector(cfg, default_model_path) as col:
            await col.start()
            actor = col.scheduler.actors[0]

            async def kill_soon():
                await asyncio.sleep(0.3)
                ray.kill(actor, no_restart=False)  # the process dies; Ray restarts the actor

            killer = asyncio.create_task(kill_soon())
            groups = await col.collect(tasks)
            await killer
            return groups

    groups = asyncio.run(main())
    assert [g.task_id for g in groups] == [t.task_id for t in tasks]
    assert all(r.status.value == "ok" for g in groups for r in g.rollouts)
    assert sum(len(g.rollouts) for g in groups) == 12


def test_collect_to_dir_writes_parquet_and_metrics(tmp_path, collector):
    out = tmp_path / "out"
    tasks = [_task(i, reward=float(i % 2)) for i in range(9)]
    summary = asyncio.run(collector.collect_to_dir(tasks, out, progress=False, out=open(os.devnull, "w")))
    assert len(part_files(out)) >= 3
    table = read_rollout_table(out)
    assert table.num_rows == 18 and ray.data.read_parquet(str(out)).count() == 18 and pq.read_schema(part_files(out)[0]) == ROLLOUT_SCHEMA
    on_disk = json.loads((out / ".gym_ray" / "metrics.json").read_text())
    assert on_disk["overall"]["rollouts"] == 18 == summary["overall"]["rollouts"]
    assert on_disk["overall"]["pass@1"] == pytest.approx(4 / 9)
    assert metrics_from_dir(out)["overall"]["pass@2"] == pytest.approx(4 / 9)
    with pytest.raises(ResumeError, match="--resume"):
        asyncio.run(collector.collect_to_dir(tasks, out, progress=False))


RESUME_SCRIPT = textwrap.dedent("""
    import asyncio, os, sys
    import ray
    import collect_fakes
    from collect_fakes import FakeAgent, FakeEnv, FakePolicy
    from gym_ray.collect.api import Collector
    from gym_ray.config import validate_config
    from gym_ray.types import Task

    out, model, resume, address = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    ray.cloudpickle.register_pickle_by_value(collect_fakes)
    ray.init(address=address, log_to_driver=False)
    cfg = validate_config({"envs": {"fake": {"server": "unused:Unused"}},
                           "collect": {"num_repeats": 3, "concurrency": 6, "rows_per_file": 6}})
    tasks = [Task(task_id=f"t{i}", env="fake", prompt=[{"role": "user", "content": str(i)}],
                  verifier_metadata={"sleep_s": 0.25}) for i in range(40)]  # the same tasks: resume checks
    col = Collector(cfg, FakePolicy(model), envs={"fake": FakeEnv()}, agent_classes={"fake": FakeAgent})
    asyncio.run(col.collect_to_dir(tasks, out, resume=resume, progress=False))
""")


def test_resume_after_a_kill_completes_with_no_duplicates_and_no_gaps(tmp_path, ray_cluster, default_model_path):
    """Two driver processes on this session's cluster: the first is SIGKILLed mid-run (its actors die with
    it), the second resumes into the same directory."""
    out = tmp_path / "run"
    script = tmp_path / "collect_run.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(script), str(out), default_model_path, "0", address], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 400  # a loaded 2-core machine
        while len(part_files(out)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run wrote no files"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no flush, no clean shutdown
        proc.wait()
    before = {p.name: pq.read_table(p) for p in part_files(out)}
    partial = pa.concat_tables(before.values())
    assert 0 < partial.num_rows < 120
    assert len(done_groups(out)) * 3 == partial.num_rows  # only whole groups were ever written

    done = subprocess.run([sys.executable, str(script), str(out), default_model_path, "1", address], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stdout
    final = read_rollout_table(out)
    keys = list(zip(final["task_id"].to_pylist(), final["rollout_index"].to_pylist(), strict=True))
    assert sorted(keys) == sorted((f"t{i}", k) for i in range(40) for k in range(3))  # no gap, no duplicate
    assert len(set(final["group_id"].to_pylist())) == 40
    for name, table in before.items():  # files of the crashed run are untouched
        assert pq.read_table(out / name).equals(table)
    assert json.loads((out / ".gym_ray" / "metrics.json").read_text())["overall"]["rollouts"] == 120
