"""The runner the collection paths feed: finished groups in, alerts out, the first `stop` alert kept."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from gym_ray.config import EnvConfig, MonitorsConfig
from gym_ray.monitors.detectors import DETECTORS, Alert, groups_of

ALERTS_FILE = "alerts.jsonl"  # in the run's .gym_ray/, one alert a line


class MonitorStop(RuntimeError):
    """A monitor set to `on_alert: stop` fired: the run stopped, the rows already finished are kept."""

    def __init__(self, alert: Alert):
        super().__init__(f"stopped by monitor {alert.line()}")
        self.alert = alert


class MonitorRunner:
    """The detectors `config` names, fed each table of finished groups (`observe`). `on_alert` sees each
    alert as it fires (the collector prints it and counts it in the Ray metrics)."""

    def __init__(self, config: MonitorsConfig, envs: dict[str, EnvConfig] | None = None,
                 on_alert: Callable[[Alert], None] | None = None):
        self.detectors = [DETECTORS[name](cfg, envs or {}) for name, cfg in config.enabled.items()]
        self.on_alert = on_alert
        self.alerts: list[Alert] = []
        self.groups = 0
        self.stopped_by: Alert | None = None

    async def observe(self, table: pa.Table) -> list[Alert]:
        """Run every detector over the table's groups; the alerts that fired."""
        new: list[Alert] = []
        for group in groups_of(table):
            self.groups += 1
            for d in self.detectors:
                alert = await d.observe(group)
                if alert is not None:
                    new.append(alert)
        for alert in new:
            self.alerts.append(alert)
            if alert.on_alert == "stop" and self.stopped_by is None:
                self.stopped_by = alert
            if self.on_alert is not None:
                self.on_alert(alert)
        return new

    def status(self) -> str:
        """The progress line's words: which monitors alerted, `stop` first."""
        if not self.alerts:
            return ""
        names = sorted({a.monitor for a in self.alerts})
        head = f"STOPPED by {self.stopped_by.monitor}; " if self.stopped_by else ""
        return f"{head}alerts: {', '.join(names)}"

    def jsonl(self) -> bytes:
        return "".join(json.dumps(a.to_json()) + "\n" for a in self.alerts).encode()


def print_alert(alert: Alert) -> None:
    """One stderr line per alert, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"gym-ray: monitor alert: {alert.line()}", file=sys.stderr)


def read_alerts(path: str | Path) -> list[dict]:
    """The alerts of `.gym_ray/alerts.jsonl` (unreadable lines are skipped: the report must not fail)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
