"""`gym-ray check` on tree rollouts: a real tree run (the counter env, the scripted policy, branched at every
assistant turn) passes; a changed prefix token, an orphan node and a missing leaf each break the contract,
naming the tree and the node, exit 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import report_runs

from gym_ray.cli import main
from gym_ray.report.checks import CHECKS, ERROR, run_checks
from gym_ray.rundir import read_rollout_table
from gym_ray.types import Rollout, rollouts_from_arrow


def _rows(run: Path) -> list[Rollout]:
    return sorted(rollouts_from_arrow(read_rollout_table(run)), key=lambda r: (r.tree_id, r.node_id))


def test_a_tree_run_passes(tree_run, capsys):
    rows = _rows(tree_run)
    full = [r for r in rows if r.task_id != "counter-stop"]
    assert len(full) == 8 and {r.node_id for r in full} == {"0.0.0", "0.0.1", "0.1.0", "0.1.1"}
    [early] = [r for r in rows if r.task_id == "counter-stop"]
    assert (early.node_id, early.status, early.rollout_index) == ("0", "ok", 0)  # stands for the group's 4 places
    assert len({r.reward for r in full}) > 1
    report = run_checks(tree_run)
    assert [f for f in report.findings if CHECKS[f.check][0] == ERROR] == [] and report.skipped == []
    assert main(["check", str(tree_run)]) == 0
    assert "contract holds" in capsys.readouterr().out


def _changed_prefix_token(rows: list[Rollout]) -> tuple[list[Rollout], str]:
    r = next(r for r in rows if r.node_id == "0.1.1")
    k = r.branch_token_offset - len(r.prompt_token_ids) - 1  # the last shared token, a tool result's
    assert k > 0 and not r.response_loss_mask[k]
    ids = list(r.response_token_ids)
    ids[k] = ids[k] + 1
    return [r.model_copy(update={"response_token_ids": ids}) if x is r else x for x in rows], r.tree_id


def _orphan(rows: list[Rollout]) -> tuple[list[Rollout], str]:
    r = next(r for r in rows if r.node_id == "0.1.1")
    return [r.model_copy(update={"parent_node_id": "0.0"}) if x is r else x for x in rows], r.tree_id


def _missing_leaf(rows: list[Rollout]) -> tuple[list[Rollout], str]:
    r = next(r for r in rows if r.node_id == "0.1.1")
    return [x for x in rows if x is not r], r.tree_id


BREAKS = {"tree_prefix_mismatch": _changed_prefix_token, "tree_orphan_node": _orphan,
          "tree_missing_leaf": _missing_leaf}


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_each_tree_break_names_the_tree_and_node_and_exits_1(check, tree_run, tmp_path, capsys):
    rows, tree_id = BREAKS[check](_rows(tree_run))
    broken = tmp_path / "broken"
    shutil.copytree(tree_run / ".gym_ray", broken / ".gym_ray")
    report_runs.write_rows(broken, rows)
    report = run_checks(broken)
    errors = {f.check for f in report.findings if CHECKS[f.check][0] == ERROR}
    assert errors == ({check, "missing_rollout"} if check == "tree_missing_leaf" else {check})
    [found] = [f for f in report.findings if f.check == check]
    assert f"tree {tree_id} node 0.1.1 " in found.detail
    assert main(["check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {check}" in out and f"tree {tree_id} node 0.1.1" in out and "CONTRACT BROKEN" in out
