"""How the suite is split across pytest-xdist workers (`make test` runs `-n 3 --dist loadgroup`).

Each worker has its own Ray cluster, so a unit of work is a whole module (its module fixtures are built once)
or a folder whose conftest builds session fixtures (tests/report). The tests on the shared vLLM engine are one
unit, so the engine starts once. Units go out longest first (tests/durations.json, written by a run with
GYM_RAY_DURATIONS=tests/durations.json), so no long module starts last and holds the run alone.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
ONE_UNIT_FOLDERS = ("tests/report/",)  # their conftest's session fixtures are built once per worker


def unit_of(nodeid: str, on_shared_vllm: bool) -> str:
    if on_shared_vllm:
        return "shared_vllm"
    path = nodeid.split("::")[0]
    return next((folder for folder in ONE_UNIT_FOLDERS if path.startswith(folder)), path)


def order_and_group(items, on_shared_vllm) -> None:
    """Reorder `items` unit by unit, longest unit first, and mark each item with its unit for xdist."""
    units: dict[str, list] = defaultdict(list)
    for item in items:
        units[unit_of(item.nodeid, on_shared_vllm(item))].append(item)
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    ordered = sorted(units.items(), key=lambda unit: -seconds.get(unit[0], 0.0))
    items[:] = [item for _, members in ordered for item in members]
    for name, members in units.items():
        for item in members:
            item.add_marker(pytest.mark.xdist_group(name))


class DurationRecorder:
    """Sums each unit's setup + call + teardown seconds and writes them as JSON at the end of the run."""

    def __init__(self, path: str):
        self.path, self.seconds = Path(path), defaultdict(float)

    def pytest_runtest_logreport(self, report):
        nodeid, _, group = report.nodeid.rpartition("@")  # xdist's loadgroup appends "@<group>"
        self.seconds[group if nodeid else unit_of(report.nodeid, False)] += report.duration

    def pytest_sessionfinish(self, session):
        if not hasattr(session.config, "workerinput"):  # the controller sees every worker's reports
            ranked = dict(sorted(self.seconds.items(), key=lambda kv: -kv[1]))
            self.path.write_text(json.dumps({k: round(v, 1) for k, v in ranked.items()}, indent=1) + "\n")


def register_recorder(config) -> None:
    if path := os.environ.get("GYM_RAY_DURATIONS"):
        config.pluginmanager.register(DurationRecorder(path), "gym_ray_durations")
