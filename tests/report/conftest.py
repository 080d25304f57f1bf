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
