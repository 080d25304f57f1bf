"""One clean run (the weather env played by `report_runs.mixed`: half the episodes solve it) for the report,
check and compare tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import report_runs


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "run"
    report_runs.collect(out, "report_runs:mixed", num_repeats=4)
    return out


@pytest.fixture(scope="session")
def tree_run(tmp_path_factory) -> Path:
    """The counter env played as width-2, depth-2 trees: two full trees and one that ends before branching."""
    out = tmp_path_factory.mktemp("tree") / "run"
    report_runs.tree_run(out)
    return out
