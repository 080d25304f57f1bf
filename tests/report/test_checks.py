"""`gym-ray check` finds each defect in a run made to have it (one run per check) and passes a clean run:
contract breaks exit 1, quality warnings exit 0, an unreadable directory exits 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import report_runs

from gym_ray.cli import main
from gym_ray.report.checks import CHECKS, ERROR, run_checks
from gym_ray.rundir import read_rollout_table
from gym_ray.types import Rollout, rollouts_from_arrow


def _fired(run_dir: Path) -> set[str]:
    return set(run_checks(run_dir).counts)


def test_clean_run_passes_every_check(mixed_run, capsys):
    report = run_checks(mixed_run)
    assert report.findings == [] and report.skipped == [] and report.rollouts == 24
    assert main(["check", str(mixed_run)]) == 0
    out = capsys.readouterr().out
    assert "contract holds: 0 of 24 rollouts flagged, 0 warnings" in out
    saved = json.loads((mixed_run / ".gym_ray" / "check.json").read_text())
    assert saved["counts"] == {c: 0 for c in CHECKS} and saved["verdicts"] == {}


def _edit_last_answer(r: Rollout) -> Rollout:
    messages = json.loads(r.messages_json)
    messages[-1]["content"] = "It is snowing."
    return r.model_copy(update={"messages_json": json.dumps(messages)})


def _failed_but_rewarded(r: Rollout) -> Rollout:
    return r.model_copy(update={"status": "env_error", "error": "verifier raised", "failure_stage": "verification",
                                "failure_kind": "exception", "mask_sample": True})


# check -> how to break the clean run's rows (row 0 is a solved episode: a tool call, then the answer)
BREAKS = {
    "row_contract": lambda rows: [rows[0].model_copy(update={"response_logprobs": rows[0].response_logprobs[:-1]}),
                                  *rows[1:]],
    "text_token_mismatch": lambda rows: [_edit_last_answer(rows[0]), *rows[1:]],
    "failed_row_rewarded": lambda rows: [_failed_but_rewarded(rows[0]), *rows[1:]],
    "duplicate_rollout": lambda rows: [*rows, rows[0]],
    "missing_rollout": lambda rows: rows[1:],
    "missing_groups": lambda rows: [r for r in rows if r.task_id != "weather-5"],
}


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_each_contract_break_is_found_and_exits_1(check, mixed_run, tmp_path, capsys):
    rows = sorted(rollouts_from_arrow(read_rollout_table(mixed_run)), key=lambda r: (r.task_id, r.rollout_index))
    assert rows[0].reward == 1.0 and rows[0].num_tool_calls == 1
    broken = tmp_path / "broken"
    shutil.copytree(mixed_run / ".gym_ray", broken / ".gym_ray")
    report_runs.write_rows(broken, BREAKS[check](rows), check=False)
    errors = {c for c in _fired(broken) if CHECKS[c][0] == ERROR}
    assert errors == {check}
    assert main(["check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {check}" in out and "CONTRACT BROKEN" in out


# check -> the scripted policy that shows it, and the run's overrides
WARNINGS = {
    "model_call_failed": ("broken", ()),
    "runaway_generation": ("rambling", ("collect.sampling.max_tokens=8",)),
    "empty_final_answer": ("silent", ()),
    "tool_call_parse_error": ("garbled", ()),
    "task_always_fails": ("clueless", ()),
    "zero_reward_variance": ("perfect", ()),
}


@pytest.mark.parametrize("check", sorted(WARNINGS))
def test_each_quality_warning_is_found_and_exits_0(check, tmp_path, capsys):
    script, overrides = WARNINGS[check]
    report_runs.collect(tmp_path / "run", f"report_runs:{script}", num_repeats=2, limit=2, overrides=overrides)
    fired = _fired(tmp_path / "run")
    assert check in fired and not {c for c in fired if CHECKS[c][0] == ERROR}
    assert main(["check", str(tmp_path / "run")]) == 0
    assert f"warn  {check}" in capsys.readouterr().out


def test_not_a_run_dir_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"gym-ray: error: {tmp_path}: no rollout files (part-*.parquet) found"


def test_text_check_is_skipped_when_the_config_names_another_tokenizer(mixed_run, tmp_path):
    """A trainer's own policy may tokenize with another template than the config's: no false mismatch."""
    run = tmp_path / "run"
    shutil.copytree(mixed_run, run)
    config = json.loads((run / ".gym_ray" / "config.json").read_text())
    config["model"]["chat_template"] = None  # SmolLM2's own template: another fingerprint than the rows'
    (run / ".gym_ray" / "config.json").write_text(json.dumps(config))
    report = run_checks(run)
    assert report.findings == []
    [skipped] = report.skipped
    assert skipped.startswith("text_token_mismatch: the rows were tokenized by another tokenizer")
