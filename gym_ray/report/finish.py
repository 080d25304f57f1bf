"""What `gym-ray run` and `gym-ray collect` do after the last group: the health checks (printed, saved),
the dataset card and the report. None of it may fail a collection whose rows are already on disk."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from gym_ray.report.card import write_card
from gym_ray.report.checks import CheckReport, format_check, run_checks, write_check
from gym_ray.rundir import RunDir
from gym_ray.rundir.location import REPORT

log = logging.getLogger(__name__)


def write_report(run_dir: str | Path, output: str | Path | None = None, *, pass_threshold: float = 1.0,
                 checks: CheckReport | None = None) -> Path:
    """report.html for `run_dir` (default `RUN_DIR/.gym_ray/report.html`), with its check verdicts."""
    from gym_ray.report.report import build_report

    out = Path(output) if output else RunDir.of(run_dir).meta(REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    checks = checks or run_checks(run_dir, pass_threshold=pass_threshold)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(build_report(run_dir, checks, pass_threshold=pass_threshold), encoding="utf-8")
    tmp.replace(out)
    return out


def finish_run(run_dir: str | Path, out=None) -> Path | None:
    """Check, card, report; print where the report is. Returns its path (None when it could not be made)."""
    out = out or sys.stdout
    try:
        checks = run_checks(run_dir)
        write_check(checks)
        summary = format_check(checks, examples=1)
        print(f"\n{summary}", file=out)
        write_card(run_dir, summary)
        path = write_report(run_dir, checks=checks)
    except Exception as e:  # noqa: BLE001 - the rollouts are written; a report bug must not fail the run
        log.exception("report of %s failed", run_dir)
        print(f"report: not written ({type(e).__name__}: {e}); the rollouts are complete", file=out)
        return None
    print(f"report: {path}", file=out)
    return path
