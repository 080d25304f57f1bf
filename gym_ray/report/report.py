"""`gym-ray report RUN_DIR`: one self-contained report.html (no network: plots are inline SVG from
matplotlib; the page's template, style and browser script, page.html, page.css and page.js, are inlined).

Size on big runs: every episode is in the browser's index (a few columns, filtered and paged in the
page, 50 rows a page), but only `detail_rows` episodes (default 1,000) carry their conversation and
tokens: every flagged one first (up to half the budget), then an even sample over env x status; the
others open to their index line and a pointer to the Parquet row. A 100,000-row run stays a few MB.
"""

from __future__ import annotations

import html
import io
import json
import random
from collections import defaultdict
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gym_ray.collect.metrics import metrics_from_dir
from gym_ray.report.checks import CHECKS, CheckReport, run_tokenizer
from gym_ray.report.cost import cost_section
from gym_ray.report.monitors import monitors_section
from gym_ray.rundir import RunDir, read_part, read_run
from gym_ray.rundir.location import CONFIG
from gym_ray.types import ROLLOUT_SCHEMA

_INDEX_COLUMNS = ["rollout_id", "group_id", "task_id", "env", "rollout_index", "segment_index", "num_segments",
                  "status", "reward", "num_turns", "num_tool_calls", "truncated", "created_at", "metrics_json",
                  "reward_component_names", "reward_component_values", "response_loss_mask", "prompt_token_ids",
                  "tree_id", "node_id", "branch_token_offset"]
_DETAIL_COLUMNS = ["rollout_id", "segment_index", "prompt_token_ids", "response_token_ids", "response_loss_mask",
                   "response_logprobs", "gen_span_starts", "gen_span_ends", "call_finish_reasons", "messages_json",
                   "error", "failure_stage", "failure_kind", "failure_delivery", "attempt", "policy_version",
                   "model", "sampling_params_json"]


def build_report(run_dir: str | Path, checks: CheckReport, *, pass_threshold: float = 1.0,
                 detail_rows: int = 1000, seed: int = 0) -> str:
    d = Path(run_dir)
    table = read_run(d, _INDEX_COLUMNS)
    rows = _index_rows(table)
    verdicts = checks.verdicts()
    metrics = metrics_from_dir(d, pass_threshold)
    plots = _plots(rows, metrics, pass_threshold)
    chosen = _pick_details(rows, verdicts, detail_rows, seed)
    details, vocab = _details(d, chosen)
    data = {
        "run": str(d), "rows": _columnar(rows, verdicts), "details": details, "vocab": vocab,
        "checks": {c: {"severity": s, "what": w, "count": checks.counts.get(c, 0)} for c, (s, w) in CHECKS.items()},
        "detail_rows": len(details), "total_rows": len(rows),
    }
    return _page(d, metrics, plots, checks, data)


def _index_rows(table) -> list[dict]:
    gen = [sum(m) for m in table["response_loss_mask"].to_pylist()]
    total = (pc.add(pc.list_value_length(table["prompt_token_ids"]), pc.list_value_length(table["response_loss_mask"]))
             .to_pylist())
    rows = table.drop_columns(["response_loss_mask", "prompt_token_ids"]).to_pylist()
    for r, g, t in zip(rows, gen, total, strict=True):
        m = _loads(r.pop("metrics_json"), {})
        r["latency"] = m.get("total_s") if isinstance(m, dict) else None
        r["gen_tokens"], r["total_tokens"] = g, t
        r["t"] = r.pop("created_at").timestamp()
    return rows


def _columnar(rows: list[dict], verdicts: dict[str, list[str]]) -> dict[str, list]:
    """The browser's index, one list per column (much smaller than a list of objects)."""
    keys = ["rollout_id", "task_id", "env", "rollout_index", "segment_index", "status", "reward", "num_turns",
            "num_tool_calls", "gen_tokens", "latency", "tree_id", "node_id", "branch_token_offset"]
    out: dict[str, list] = {k: [r[k] for r in rows] for k in keys}
    out["reward"] = [round(x, 4) for x in out["reward"]]
    out["latency"] = [None if x is None else round(x, 3) for x in out["latency"]]
    out["flags"] = [verdicts.get(r["rollout_id"], []) for r in rows]
    return out


def _pick_details(rows: list[dict], verdicts: dict, budget: int, seed: int) -> set[tuple[str, int]]:
    """The rows that carry their tokens; a tree's leaves go together (its view shows them side by side)."""
    keys = [(r["rollout_id"], r["segment_index"]) for r in rows]
    if len(keys) <= budget:
        return set(keys)
    chosen = _sample(rows, keys, verdicts, budget, seed)
    trees = {r["tree_id"] for k, r in zip(keys, rows, strict=True) if k in chosen and r["tree_id"]}
    return chosen | {k for k, r in zip(keys, rows, strict=True) if r["tree_id"] in trees}


def _sample(rows: list[dict], keys: list[tuple[str, int]], verdicts: dict, budget: int,
            seed: int) -> set[tuple[str, int]]:
    rng = random.Random(seed)
    flagged = [k for k, r in zip(keys, rows, strict=True) if r["rollout_id"] in verdicts]
    chosen = set(rng.sample(flagged, min(len(flagged), budget // 2)))
    strata: dict[tuple, list] = defaultdict(list)
    for k, r in zip(keys, rows, strict=True):
        if k not in chosen:
            strata[(r["env"], r["status"])].append(k)
    for keys_ in strata.values():
        rng.shuffle(keys_)
    while len(chosen) < budget and any(strata.values()):  # round-robin: rare strata get their share
        for keys_ in strata.values():
            if keys_ and len(chosen) < budget:
                chosen.add(keys_.pop())
    return chosen


def _details(run_dir: Path, chosen: set[tuple[str, int]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Conversation and tokens of the chosen rows, keyed "rollout_id/segment"; token texts by id."""
    tokenizer, _ = run_tokenizer(run_dir)
    ids_seen: set[int] = set()
    out: dict[str, Any] = {}
    schema = pa.schema([ROLLOUT_SCHEMA.field(c) for c in _DETAIL_COLUMNS])
    run = RunDir.of(run_dir)
    for f in run.parts():
        part = read_part(run, f, schema)
        keep = [i for i, (rid, seg) in enumerate(zip(part["rollout_id"].to_pylist(), part["segment_index"].to_pylist(),
                                                     strict=True)) if (rid, seg) in chosen]
        if not keep:
            continue
        for r in part.take(keep).to_pylist():
            key = f"{r['rollout_id']}/{r['segment_index']}"
            ids_seen.update(r["prompt_token_ids"])
            ids_seen.update(r["response_token_ids"])
            out[key] = {
                "prompt": r["prompt_token_ids"], "ids": r["response_token_ids"], "mask": r["response_loss_mask"],
                "lp": [round(x, 3) for x in r["response_logprobs"]], "starts": r["gen_span_starts"],
                "ends": r["gen_span_ends"], "finish": r["call_finish_reasons"],
                "messages": _loads(r["messages_json"], []), "error": r["error"],
                "failure": [r["failure_stage"], r["failure_kind"], r["failure_delivery"]],
                "attempt": r["attempt"], "policy_version": r["policy_version"], "model": r["model"],
                "sampling": _loads(r["sampling_params_json"], {}),
            }
    vocab: dict[str, str] = {}
    if tokenizer is not None:
        for i in sorted(ids_seen):
            vocab[str(i)] = tokenizer.decode([i], skip_special_tokens=False)
    return out, vocab


# -- plots -----------------------------------------------------------------------------------------

def _plots(rows: list[dict], metrics: dict, threshold: float) -> list[tuple[str, str, str]]:
    """(id, title, inline SVG) for each plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.figsize": (5.2, 3.0), "font.size": 8, "svg.fonttype": "none",
                         "axes.spines.top": False, "axes.spines.right": False})
    episodes = [r for r in rows if r["segment_index"] == r["num_segments"] - 1]
    envs = sorted({r["env"] for r in episodes})
    by_env = {e: [r for r in episodes if r["env"] == e] for e in envs}
    out = []

    def add(pid: str, title: str, fig) -> None:
        buf = io.StringIO()
        fig.tight_layout()
        fig.savefig(buf, format="svg")
        plt.close(fig)
        svg = buf.getvalue()
        out.append((pid, title, svg[svg.index("<svg"):]))

    fig, ax = plt.subplots()
    ax.hist([[r["reward"] for r in by_env[e]] for e in envs], bins=20, label=envs, stacked=True)
    ax.set(xlabel="reward", ylabel="episodes")
    ax.legend(fontsize=7)
    add("reward", "Reward distribution per environment", fig)

    fig, ax = plt.subplots()
    for env, m in [*metrics["per_env"].items(), ("ALL", metrics["overall"])]:
        ks = sorted(int(k[5:]) for k in m if k.startswith("pass@"))
        ax.plot(ks, [m[f"pass@{k}"] for k in ks], marker="o", label=env, lw=2 if env == "ALL" else 1)
    ax.set(xlabel="k", ylabel=f"pass@k (reward >= {threshold:g})", xscale="log", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    add("passk", "pass@k", fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.4, 3.0))
    a1.hist([[r["gen_tokens"] for r in by_env[e]] for e in envs], bins=30, stacked=True, label=envs)
    a1.set(xlabel="generated tokens per segment", ylabel="rows")
    a2.hist([[r["num_turns"] for r in by_env[e]] for e in envs], bins=np.arange(0, max(
        [r["num_turns"] for r in episodes] + [1]) + 2) - 0.5, stacked=True, label=envs)
    a2.set(xlabel="turns per segment")
    a1.legend(fontsize=7)
    add("tokens", "Tokens and turns per rollout", fig)

    fig, ax = plt.subplots()
    qs = [50, 90, 99]
    width = 0.8 / len(qs)
    for j, q in enumerate(qs):
        vals = [np.percentile(lat, q) if (lat := [r["latency"] for r in by_env[e] if r["latency"] is not None])
                else 0 for e in envs]
        ax.bar(np.arange(len(envs)) + j * width, vals, width, label=f"p{q}")
    ax.set_xticks(np.arange(len(envs)) + width, envs)
    ax.set(ylabel="episode seconds")
    ax.legend(fontsize=7)
    add("latency", "Episode latency percentiles", fig)

    fig, ax = plt.subplots()
    statuses = sorted({r["status"] for r in rows})
    bottom = np.zeros(len(envs))
    for s in statuses:
        vals = np.array([sum(r["status"] == s for r in rows if r["env"] == e) for e in envs], dtype=float)
        ax.bar(envs, vals, bottom=bottom, label=s, color="#4c9a2a" if s == "ok" else None)
        bottom += vals
    ax.set(ylabel="rows")
    ax.legend(fontsize=7)
    add("status", "Rows by status (failures)", fig)

    fig, ax = plt.subplots()
    comps: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in episodes:
        for n, v in zip(r["reward_component_names"], r["reward_component_values"], strict=False):
            comps[(r["env"], n)].append(v)
    if comps:
        labels = [f"{e}/{n}" for e, n in comps]
        ax.barh(labels, [float(np.mean(v)) for v in comps.values()])
        ax.set(xlabel="mean value")
    else:
        ax.text(0.5, 0.5, "no reward components", ha="center", transform=ax.transAxes)
    add("components", "Reward components", fig)

    fig, ax = plt.subplots()
    groups: dict[str, list[float]] = defaultdict(list)
    for r in episodes:
        groups[r["group_id"]].append(r["reward"])
    spreads = [float(np.std(v)) for v in groups.values() if len(v) > 1]
    zero = sum(s == 0 for s in spreads)
    ax.hist(spreads, bins=20)
    ax.set(xlabel="reward std within the group", ylabel="groups",
           title=f"{zero} of {len(spreads)} groups have zero variance (no GRPO signal)")
    add("spread", "Per-group reward spread", fig)

    fig, ax = plt.subplots()
    times = np.array(sorted(r["t"] for r in rows if r["segment_index"] == 0))
    if len(times) > 1 and times[-1] > times[0]:
        bins = min(40, max(5, len(times) // 20))
        counts, edges = np.histogram(times - times[0], bins=bins)
        ax.plot(edges[:-1], counts / np.diff(edges), drawstyle="steps-post")
        ax.set(xlabel="seconds since the first row", ylabel="rollouts / s")
    else:
        ax.text(0.5, 0.5, "all rows written at once", ha="center", transform=ax.transAxes)
    add("throughput", "Throughput over time (rows written)", fig)
    return out


# -- page ------------------------------------------------------------------------------------------

def _page(d: Path, metrics: dict, plots, checks: CheckReport, data: dict) -> str:
    manifest = _loads(_read(RunDir.of(d).manifest), {})
    run_id = manifest.get("run_id", "?") if isinstance(manifest, dict) else "?"
    config = _read(RunDir.of(d).meta(CONFIG))
    from gym_ray.collect.metrics import format_table

    check_rows = "".join(
        f"<tr class='{s if n else 'ok'}'><td>{'ok' if not n else ('FAIL' if s == 'error' else 'warn')}</td>"
        f"<td>{c}</td><td>{n}</td><td>{html.escape(w)}</td></tr>"
        for c, (s, w) in CHECKS.items() for n in [checks.counts.get(c, 0)])
    skipped = "".join(f"<p class='muted'>skipped: {html.escape(s)}</p>" for s in checks.skipped)
    figures = "".join(f"<figure id='plot-{pid}'><figcaption>{html.escape(t)}</figcaption>{svg}</figure>"
                      for pid, t, svg in plots)
    payload = _script_json(data)
    sample_note = (f"all {data['total_rows']} rows carry their conversation and tokens"
                   if data["detail_rows"] == data["total_rows"] else
                   f"{data['detail_rows']} of {data['total_rows']} rows carry their conversation and tokens "
                   "(every flagged row first, then an even sample per env and status)")
    return _asset("page.html").format(
        title=html.escape(f"gym_ray report: {d.name}"), run=html.escape(str(d)),
        run_id=html.escape(str(run_id)), table=html.escape(format_table(metrics)),
        checks=check_rows, skipped=skipped, verdict="CONTRACT BROKEN" if checks.contract_broken else "contract holds",
        verdict_class="error" if checks.contract_broken else "ok", figures=figures, data=payload,
        sample_note=html.escape(sample_note), config=html.escape(config or "(no readable .gym_ray/config.json)"),
        monitors=monitors_section(d), cost=cost_section(metrics), css=_asset("page.css"), js=_asset("page.js"))


def _asset(name: str) -> str:
    """One of the page's own files: page.html (a `str.format` template), page.css, page.js."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def _script_json(data: dict) -> str:
    """JSON to sit inside a <script> block: `<`, `>` and `&` as JSON escapes, so that no text of the rows
    (`</script`, `<!--`, `<script`) can end the block or put the HTML parser in a state that swallows the
    page's own script; JSON.parse reads them back as the same characters."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _read(path: Path) -> str:
    """The file's text, or "" when it is missing or unreadable (the report shows that it is absent)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _loads(text: str | None, default):
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default

