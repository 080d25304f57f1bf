"""`gym-ray reverify`: stored episodes re-scored by another verifier with no policy calls, tokens untouched,
the old reward and the verifier's identity kept on each row; `compare` names exactly what changed; an episode
whose verify reads live state is scored only after an exact replay, else it is a failure row."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml
from replay_envs import ENVS, MAGIC, ledger_task, play, run_config, scripted_policy, step_task, word_task

from gym_ray.cli import main
from gym_ray.collect.metrics import metrics_from_dir
from gym_ray.report.checks import format_check, run_checks
from gym_ray.report.compare import compare_runs, format_compare
from gym_ray.reverify import reverify_run
from gym_ray.rundir import RunDir, read_run
from gym_ray.rundir.location import CONFIG


@pytest.fixture(scope="module")
def policy():
    return scripted_policy()


def rows_of(run) -> dict[str, dict]:
    return {r["rollout_id"]: r for r in read_run(run).to_pylist()}


def test_a_corrected_verifier_changes_exactly_the_hacked_rows(policy, tmp_path, capsys):
    keys = ["K0", "K1", "K2", "K3"]  # K1 and K3 answer with the magic string the lax verifier takes
    run = play(policy, tmp_path / "run", [word_task(i, k) for i, k in enumerate(keys)])
    before = rows_of(run)
    hacked = {rid for rid, r in before.items() if MAGIC in r["messages_json"]}
    assert len(hacked) == 4 and all(r["reward"] == 1.0 and r["status"] == "ok" for r in before.values())
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(run_config({"magic": {**ENVS["magic"], "config": {"strict": True}}})))

    assert main(["reverify", str(run), "-o", str(tmp_path / "new"), "--config", str(strict)]) == 0
    assert "magic: 8 re-scored (4 changed), 0 failed" in capsys.readouterr().out
    after = rows_of(tmp_path / "new")
    assert after.keys() == before.keys()
    changed = {rid for rid in after if after[rid]["reward"] != before[rid]["reward"]}
    assert changed == hacked and all(after[rid]["reward"] == 0.0 for rid in hacked)
    for rid, r in after.items():  # tokens untouched, the old reward and the verifier kept
        old = before[rid]
        assert r["response_token_ids"] == old["response_token_ids"] and r["messages_json"] == old["messages_json"]
        assert r["previous_reward"] == old["reward"] == 1.0
        assert r["verifier"].startswith("replay_envs:MagicWords ") and "config:" in r["verifier"]
    # a normal run directory: check, metrics and compare read it; compare names the changed episodes
    report = run_checks(tmp_path / "new")
    assert not report.contract_broken, format_check(report)
    assert metrics_from_dir(tmp_path / "new")["per_env"]["magic"]["mean_reward"] == 0.5
    comparison = compare_runs([run, tmp_path / "new"])
    [changes] = comparison.changes
    assert {c.rollout_id for c in changes.changed} == hacked and changes.paired["magic"] == 8
    text = format_compare(comparison)
    assert "magic: 4 of 8 changed (reward up 0, down 4; status changed 0)" in text
    # the run's own (lax) verifier changes nothing
    again = reverify_run(run, tmp_path / "same")
    assert again.counts["magic"]["changed"] == 0 and again.counts["magic"]["rescored"] == 8


def test_live_state_is_replayed_exactly_or_the_row_fails(policy, tmp_path):
    tasks = [ledger_task(0, "ledger", [2, 3]), ledger_task(1, "noisy", [4, 1]), step_task(2)]
    run = play(policy, tmp_path / "run", tasks, group_size=1)
    before = rows_of(run)
    assert [r["reward"] for r in before.values()] == [1.0, 1.0, 1.0]
    result = reverify_run(run, tmp_path / "new")
    after = {r["env"]: r for r in rows_of(tmp_path / "new").values()}
    # the deterministic ledger replays to the same state: scored again, the same reward
    assert (after["ledger"]["status"], after["ledger"]["reward"]) == ("ok", 1.0)
    # the noisy one's replay differs at its first call: a failure row saying so, never a guessed reward
    noisy = after["noisy"]
    assert (noisy["status"], noisy["failure_stage"], noisy["mask_sample"]) == ("env_error", "verification", True)
    assert "live state" in noisy["error"] and "call 0 add" in noisy["error"]
    assert noisy["previous_reward"] == 1.0
    assert result.counts["noisy"]["failed"] == 1 and result.counts["ledger"]["rescored"] == 1
    # a step-driven game's reward lived in its session: not replayable, a failure row
    steps = after["steps"]
    assert (steps["status"], steps["reward"]) == ("env_error", 0.0) and "steps are not recorded" in steps["error"]
    report = run_checks(tmp_path / "new")
    assert not report.contract_broken, format_check(report)


def test_a_run_without_tool_records_fails_its_stateful_rows(policy, tmp_path):
    """A run written before tool results were recorded reads (the column defaults), and its stateful rows
    cannot be replayed: failure rows; a stateless env's rows are still re-scored."""
    run = play(policy, tmp_path / "run", [ledger_task(0, "ledger", [5]), word_task(1, "K2")], group_size=1)
    for part in RunDir.of(run).parts():
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["tool_calls_json", "previous_reward", "verifier"]), part)
    reverify_run(run, tmp_path / "new")
    after = {r["env"]: r for r in rows_of(tmp_path / "new").values()}
    assert after["ledger"]["status"] == "env_error" and "1 tool calls, 0 recorded" in after["ledger"]["error"]
    assert (after["magic"]["status"], after["magic"]["reward"]) == ("ok", 1.0)


def test_bad_input_is_one_line_and_exit_2(policy, tmp_path, capsys):
    run = play(policy, tmp_path / "run", [word_task(0, "K0")], group_size=1)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(run_config({"ledger": ENVS["ledger"]})))
    cases = [(["reverify", str(tmp_path / "none"), "-o", str(tmp_path / "x")], "no rollout files"),
             (["reverify", str(run), "-o", str(run)], "the run itself"),
             (["reverify", str(run), "-o", str(tmp_path / "y"), "--config", str(other)], "no env 'magic'"),
             (["reverify", str(run), "-o", str(tmp_path / "new")], "already holds rollout files")]
    reverify_run(run, tmp_path / "new")
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    (RunDir.of(run).meta(CONFIG)).unlink()
    assert main(["reverify", str(run), "-o", str(tmp_path / "z")]) == 2
    assert "config.json: missing" in capsys.readouterr().err
