"""How the suite is split across pytest-xdist workers (`make test` runs `-n 2`).

Each worker has its own Ray cluster, so a unit of work is a whole module (its module fixtures are built once)
or a folder whose conftest builds session fixtures (tests/report). The tests on the shared vLLM engine are one
unit, so the engine starts once. Units go out longest first (tests/durations.json, written by a run with
GYM_RAY_DURATIONS=tests/durations.json), so no long module starts last and holds the run alone.

xdist's own `loadgroup` cannot do this under pytest 9 (it renames node ids, which pytest 9 no longer allows),
so the workers write each test's unit to a file and a scheduler of ours reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

DURATIONS = Path(__file__).with_name("durations.json")
ONE_UNIT_FOLDERS = ("tests/report/",)  # their conftest's session fixtures are built once per worker
UNITS_FILE = "GYM_RAY_TEST_UNITS"  # env: where the workers write {nodeid: unit} for the controller


def unit_of(nodeid: str, on_shared_vllm: bool) -> str:
    if on_shared_vllm:
        return "shared_vllm"
    path = nodeid.split("::")[0]
    return next((folder for folder in ONE_UNIT_FOLDERS if path.startswith(folder)), path)


def order(config, items, on_shared_vllm) -> None:
    """Reorder `items` unit by unit, longest unit first; on an xdist worker, tell the controller the units."""
    units: dict[str, list] = defaultdict(list)
    for item in items:
        units[unit_of(item.nodeid, on_shared_vllm(item))].append(item)
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    ordered = sorted(units.items(), key=lambda unit: -seconds.get(unit[0], 0.0))
    items[:] = [item for _, members in ordered for item in members]
    if hasattr(config, "workerinput") and (path := os.environ.get(UNITS_FILE)):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))  # every worker writes the same map; atomically
        with os.fdopen(fd, "w") as f:
            json.dump({item.nodeid: name for name, members in units.items() for item in members}, f)
        os.replace(tmp, path)


def configure(config) -> None:
    if path := os.environ.get("GYM_RAY_DURATIONS"):
        config.pluginmanager.register(DurationRecorder(path), "gym_ray_durations")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        os.environ[UNITS_FILE] = os.path.join(tempfile.mkdtemp(prefix="gym-ray-units-"), "units.json")
        config.pluginmanager.register(UnitSchedulerPlugin(), "gym_ray_units")


class UnitSchedulerPlugin:
    def pytest_unconfigure(self, config):
        shutil.rmtree(os.path.dirname(os.environ.pop(UNITS_FILE, "")) or "/nonexistent", ignore_errors=True)

    def pytest_xdist_make_scheduler(self, config, log):
        from xdist.scheduler import LoadScopeScheduling

        class UnitScheduling(LoadScopeScheduling):
            """xdist's scope scheduler with our units as scopes, kept in the workers' (longest first) order."""

            units: dict[str, str] | None = None

            def _split_scope(self, nodeid: str) -> str:
                if self.units is None:  # the workers wrote the file before they reported their collection
                    self.units = json.loads(Path(os.environ[UNITS_FILE]).read_text())
                return self.units.get(nodeid) or unit_of(nodeid, False)

        config.option.loadscopereorder = False
        return UnitScheduling(config, log)


class DurationRecorder:
    """Sums each unit's setup + call + teardown seconds and writes them as JSON at the end of the run."""

    def __init__(self, path: str):
        self.path, self.seconds, self.units = Path(path), defaultdict(float), None

    def pytest_runtest_logreport(self, report):
        if self.units is None and (units_file := os.environ.get(UNITS_FILE)) and Path(units_file).exists():
            self.units = json.loads(Path(units_file).read_text())
        self.seconds[(self.units or {}).get(report.nodeid) or unit_of(report.nodeid, False)] += report.duration

    def pytest_sessionfinish(self, session):
        if not hasattr(session.config, "workerinput"):  # the controller sees every worker's reports
            ranked = dict(sorted(self.seconds.items(), key=lambda kv: -kv[1]))
            self.path.write_text(json.dumps({k: round(v, 1) for k, v in ranked.items()}, indent=1) + "\n")
