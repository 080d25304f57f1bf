"""The report's cost section: where each environment's time and CPU went, per scored rollout and stage."""

from __future__ import annotations

import html

from gym_ray.collect.cost import STAGES


def cost_section(metrics: dict) -> str:
    """An HTML <section> from the run's metrics summary; it says so when the rows carry no cost record."""
    envs = [(env, m["cost"]) for env, m in metrics["per_env"].items() if m.get("cost")]
    if not envs:
        return ("<section id='cost'><h2>Cost</h2><p class='muted'>no cost records (rows written before the "
                "cost column)</p></section>")
    head = "".join(f"<th>{s}</th>" for s in STAGES)
    body = []
    for env, c in envs:
        wall = c["wall_s"] or 1.0
        cpu = "".join(f"<td>{_ms(c['stages'][s]['cpu_ms_per_scored'])}</td>" for s in STAGES)
        share = "".join(f"<td>{100 * c['stages'][s]['wall_s'] / wall:.0f}%</td>" if s != "agent" else "<td>-</td>"
                        for s in STAGES)
        env_cell = f"<td rowspan='2'>{html.escape(env)}</td><td rowspan='2'>{c['scored']}</td>"
        body.append(f"<tr>{env_cell}<td>CPU ms / scored</td><td>{_ms(c['cpu_ms_per_scored'])}</td>{cpu}</tr>")
        body.append(f"<tr><td>share of wall</td><td>{_ms(c['wall_ms_per_scored'])} ms</td>{share}</tr>")
    return ("<section id='cost'><h2>Cost: where the time goes</h2><p class='muted'>Per scored (ok) rollout: what "
            "every episode cost, failed ones included, divided by the scored ones. CPU is measured where the work "
            "ran (policy: the agent's side only, not the engine; tool and verify: the agent's side plus the "
            "environment's hook threads; sandbox: its processes). Wall shares are of the episodes' wall time; "
            "the sandbox's wall lies inside the tool or verify wall that ran it.</p>"
            f"<table><tr><th>env</th><th>scored</th><th></th><th>all</th>{head}</tr>{''.join(body)}</table>"
            "</section>")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"
