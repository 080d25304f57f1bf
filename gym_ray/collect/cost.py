"""Where a run's time and CPU went: the rows' `cost` summed per environment and stage, per scored rollout.

"Per scored rollout" divides what every episode cost (failed ones too: their cost was paid) by the episodes
that were scored (status ok), so failures show up as a dearer scored rollout. Rows written before the cost
column carry zeros; such a run reports no cost ("-") rather than a cost of 0.
"""

from __future__ import annotations

from gym_ray.types import COST_STAGES

# the stages of a summary: the calls' stages, the agent's own CPU, and the sandbox runs inside tool/verify
STAGES = (*COST_STAGES, "agent", "sandbox")
_TOTALS = ("wall_s", "cpu_s", "tokens_in", "tokens_out", "retries", "retry_wall_s", "sandbox_runs")


def stage_seconds(cost: dict) -> dict[str, tuple[float, float]]:
    """stage -> (wall s, CPU s) of one episode's cost record (the agent has no wall of its own; the sandbox's
    wall is inside the tool or verify wall)."""
    out = {s: (cost[f"{s}_wall_s"], cost[f"{s}_cpu_s"]) for s in COST_STAGES}
    out["agent"] = (0.0, cost["agent_cpu_s"])
    out["sandbox"] = (cost["sandbox_s"], cost["sandbox_cpu_s"])
    return out


def cost_summary(costs: list[dict], scored: int) -> dict | None:
    """Totals and per-scored-rollout figures of episodes' cost records; None when none was accounted."""
    accounted = [c for c in costs if c["wall_s"] > 0]
    if not accounted:
        return None
    totals = {k: sum(c[k] for c in accounted) for k in _TOTALS}
    stages = {s: {"wall_s": 0.0, "cpu_s": 0.0} for s in STAGES}
    for c in accounted:
        for s, (wall, cpu) in stage_seconds(c).items():
            stages[s]["wall_s"] += wall
            stages[s]["cpu_s"] += cpu
    per = 1 / scored if scored else None
    for m in stages.values():
        m["cpu_ms_per_scored"] = m["cpu_s"] * 1000 * per if per else None
        m["wall_ms_per_scored"] = m["wall_s"] * 1000 * per if per else None
    return {
        "accounted": len(accounted), "scored": scored, **totals,
        "cpu_ms_per_scored": totals["cpu_s"] * 1000 * per if per else None,
        "wall_ms_per_scored": totals["wall_s"] * 1000 * per if per else None,
        "tokens_in_per_scored": totals["tokens_in"] * per if per else None,
        "tokens_out_per_scored": totals["tokens_out"] * per if per else None,
        "stages": stages,
    }


def format_cost_table(summary: dict) -> str:
    """One line per environment (and the total): CPU ms per scored rollout, overall and by stage; wall per
    scored rollout; tokens and retries. Empty when the run has no cost records."""
    rows = [(env, m.get("cost")) for env, m in summary["per_env"].items()] + [("ALL", summary["overall"].get("cost"))]
    rows = [(env, c) for env, c in rows if c]
    if not rows:
        return ""
    header = ["env", "scored", "CPU ms/scored", *(f"{s} ms" for s in STAGES), "wall ms/scored", "tok in", "tok out",
              "retries"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [[env, str(c["scored"]), ms(c["cpu_ms_per_scored"]),
              *(ms(c["stages"][s]["cpu_ms_per_scored"]) for s in STAGES), ms(c["wall_ms_per_scored"]),
              "-" if c["tokens_in_per_scored"] is None else f"{c['tokens_in_per_scored']:.0f}",
              "-" if c["tokens_out_per_scored"] is None else f"{c['tokens_out_per_scored']:.0f}", str(c["retries"])]
             for env, c in rows]
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = ["CPU per scored rollout (ms; by stage, where the work ran)", fmt.format(*header),
           fmt.format(*("-" * w for w in widths))]
    return "\n".join(out + [fmt.format(*r) for r in lines])
