"""The report's monitors section: the online monitors' alerts (`.gym_ray/alerts.jsonl`), the stop first."""

from __future__ import annotations

import html
from pathlib import Path

from gym_ray.monitors import ALERTS_FILE, read_alerts
from gym_ray.rundir import RunDir


def monitors_section(run_dir: str | Path) -> str:
    """An HTML <section>; it says so when the run had no alert (or ran no monitor)."""
    alerts = read_alerts(RunDir.of(run_dir).meta(ALERTS_FILE))
    if not alerts:
        return ("<section id='monitors'><h2>Monitors</h2><p class='muted'>no alert (or no monitor: "
                "collect.monitors)</p></section>")
    stop = next((a for a in alerts if a.get("on_alert") == "stop"), None)
    head = (f"<p class='verdict error'>stopped by {html.escape(str(stop.get('monitor')))} after "
            f"{html.escape(str(stop.get('groups')))} groups; the groups still running were cancelled</p>"
            if stop else "")
    rows = "".join(
        "<tr class='warning'>" + "".join(f"<td>{html.escape(str(a.get(k, '')))}</td>" for k in
                                          ("monitor", "on_alert", "groups", "detail", "rollout_id", "example"))
        + "</tr>" for a in alerts)
    return (f"<section id='monitors'><h2>Monitors: {len(alerts)} alert(s)</h2>{head}<table><tr><th>monitor</th>"
            "<th>on_alert</th><th>after groups</th><th>what</th><th>rollout</th><th>excerpt</th></tr>"
            f"{rows}</table></section>")
