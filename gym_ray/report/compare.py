"""`gym-ray compare RUN_A RUN_B ...`: mean reward and pass@k per environment and overall, each run with a
95% interval, and each later run's difference to the first with its own interval.

Runs that hold the same episodes (a run and its `gym-ray reverify` copy) are also paired row by row, by
rollout_id: per env, how many episodes changed reward or status, and which.

The intervals are a bootstrap over *tasks*, not rollouts: the rollouts of one task are correlated (same
prompt), so resampling them as if independent would make intervals too narrow. When two runs share tasks
(the same task files), the difference is paired: each bootstrap draw takes the same tasks from both runs,
which removes the task-difficulty noise both runs share. A difference is marked significant when its
interval excludes 0.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gym_ray.rundir import RunInputError, read_run
from gym_ray.stats import pass_at_k

_COLUMNS = ["env", "task_id", "segment_index", "num_segments", "status", "reward"]
_PAIR_COLUMNS = ["rollout_id", "env", "segment_index", "num_segments", "status", "reward"]
ALL = "ALL"
# changed episodes listed by name, per later run
_LISTED = 20


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def fmt(self, signed: bool = False) -> str:
        v = f"{self.value:+.3f}" if signed else f"{self.value:.3f}"
        return f"{v} [{self.low:+.3f}, {self.high:+.3f}]" if signed else f"{v} [{self.low:.3f}, {self.high:.3f}]"


@dataclass
class Comparison:
    runs: list[str]
    # (metric, env) -> one Estimate per run, and one difference to the first per later run
    values: dict[tuple[str, str], list[Estimate | None]] = field(default_factory=dict)
    diffs: dict[tuple[str, str], list[Estimate | None]] = field(default_factory=dict)
    paired: list[bool] = field(default_factory=list)
    # per later run: its episodes paired with the first run's by rollout_id (None when they share none)
    changes: list[RowChanges | None] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    env: str
    rollout_id: str
    before: tuple[float, str]  # (reward, status)
    after: tuple[float, str]


@dataclass
class RowChanges:
    """Episodes of two runs paired by rollout_id (their last segments): per env how many pair, and those
    whose reward or status differs."""

    paired: Counter = field(default_factory=Counter)
    changed: list[Change] = field(default_factory=list)


def _episodes(run_dir: str | Path) -> dict[str, tuple[str, float, str]]:
    return {r["rollout_id"]: (r["env"], r["reward"], r["status"]) for r in read_run(run_dir, _PAIR_COLUMNS).to_pylist()
            if r["segment_index"] == r["num_segments"] - 1}


def row_changes(run_a: str | Path, run_b: str | Path) -> RowChanges | None:
    """What changed from `run_a` to `run_b` episode by episode; None when they share no rollout_id."""
    a, b = _episodes(run_a), _episodes(run_b)
    common = sorted(a.keys() & b.keys())
    if not common:
        return None
    out = RowChanges()
    for rid in common:
        (env, reward_a, status_a), (_, reward_b, status_b) = a[rid], b[rid]
        out.paired[env] += 1
        if (reward_a, status_a) != (reward_b, status_b):
            out.changed.append(Change(env, rid, (reward_a, status_a), (reward_b, status_b)))
    return out


def _per_task(run_dir: str | Path, threshold: float) -> dict[tuple[str, str], list[tuple[float, int]]]:
    """(env, task_id) -> (reward, passed) per episode; a failed episode scores 0 and does not pass."""
    out: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for r in read_run(run_dir, _COLUMNS).to_pylist():
        if r["segment_index"] == r["num_segments"] - 1:
            ok = r["status"] == "ok"
            out[(r["env"], r["task_id"])].append((r["reward"] if ok else 0.0, int(ok and r["reward"] >= threshold)))
    return out


def _metric(episodes: list[tuple[float, int]], metric: str) -> float:
    if metric == "reward":
        return float(np.mean([e[0] for e in episodes]))
    k = int(metric[5:])
    return pass_at_k(len(episodes), sum(e[1] for e in episodes), k)


def compare_runs(runs: list[str | Path], *, pass_threshold: float = 1.0, seed: int = 0,
                 resamples: int = 2000) -> Comparison:
    if len(runs) < 2:
        raise RunInputError("compare: give at least two run directories")
    tasks = [_per_task(r, pass_threshold) for r in runs]
    min_n = min(len(eps) for t in tasks for eps in t.values())
    metrics = ["reward"] + [f"pass@{k}" for k in sorted({1, *(2 ** i for i in range(1, 12) if 2 ** i <= min_n), min_n})]
    envs = sorted({env for t in tasks for env, _ in t}) + [ALL]
    rng = np.random.default_rng(seed)
    out = Comparison(runs=[str(r) for r in runs])
    base = tasks[0]
    out.paired = [set(t) == set(base) for t in tasks[1:]]
    for env in envs:
        keys = [[k for k in sorted(t) if env in (ALL, k[0])] for t in tasks]
        for metric in metrics:
            per_run = [np.array([_metric(t[k], metric) for k in ks]) for t, ks in zip(tasks, keys, strict=True)]
            out.values[(metric, env)] = [_boot(v, None, rng, resamples) for v in per_run]
            diffs: list[Estimate | None] = []
            for i, v in enumerate(per_run[1:]):
                if out.paired[i] and keys[i + 1] == keys[0]:
                    diffs.append(_boot(v - per_run[0], None, rng, resamples))
                else:
                    diffs.append(_boot(v, per_run[0], rng, resamples))
            out.diffs[(metric, env)] = diffs
    out.changes = [row_changes(runs[0], r) for r in runs[1:]]
    return out


def _boot(a: np.ndarray, b: np.ndarray | None, rng, resamples: int) -> Estimate | None:
    """Mean of `a` (minus the mean of `b`, resampled independently) with a 95% percentile interval."""
    if a.size == 0 or (b is not None and b.size == 0):
        return None
    draws = a[rng.integers(0, a.size, (resamples, a.size))].mean(axis=1)
    value = a.mean()
    if b is not None:
        draws = draws - b[rng.integers(0, b.size, (resamples, b.size))].mean(axis=1)
        value -= b.mean()
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(float(value), float(low), float(high))


def _rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    letters = [chr(65 + i) for i in range(len(c.runs))]
    header = ["metric", "env", *[f"{x}: {Path(r).name or r}" for x, r in zip(letters, c.runs, strict=True)],
              *[f"{x} - A" for x in letters[1:]]]
    rows = []
    for (metric, env), vals in c.values.items():
        rows.append([metric, env, *[v.fmt() if v else "-" for v in vals],
                     *[(d.fmt(signed=True) + (" *" if d.significant else "")) if d else "-"
                       for d in c.diffs[(metric, env)]]])
    return header, rows


def format_compare(c: Comparison) -> str:
    header, rows = _rows(c)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [f"{chr(65 + i)} = {r}" for i, r in enumerate(c.runs)]
    out += ["", line.format(*header), line.format(*("-" * w for w in widths)), *(line.format(*r) for r in rows), ""]
    out = [x.rstrip() for x in out]
    out.append(_footnote(c))
    for i, changes in enumerate(c.changes):
        if changes is not None:
            out += ["", *format_changes(changes, chr(66 + i))]
    return "\n".join(out)


def _footnote(c: Comparison) -> str:
    pairing = ", ".join("paired by task" if p else "unpaired (different tasks)" for p in c.paired)
    return f"mean [95% bootstrap interval over tasks]; differences {pairing}; * = the interval excludes 0"


def format_changes(c: RowChanges, letter: str) -> list[str]:
    """Per env: episodes paired by rollout_id, how many changed (reward up, down, status), then the changes."""
    by_env: dict[str, Counter] = defaultdict(Counter)
    for ch in c.changed:
        by_env[ch.env]["changed"] += 1
        by_env[ch.env]["up" if ch.after[0] > ch.before[0] else "down" if ch.after[0] < ch.before[0] else "same"] += 1
        by_env[ch.env]["status"] += ch.after[1] != ch.before[1]
    lines = [f"{letter} vs A, episodes paired by rollout_id: {len(c.changed)} of {sum(c.paired.values())} changed"]
    for env in sorted(c.paired):
        n = by_env[env]
        lines.append(f"  {env}: {n['changed']} of {c.paired[env]} changed (reward up {n['up']}, down {n['down']}; "
                     f"status changed {n['status']})")
    for ch in c.changed[:_LISTED]:
        lines.append(f"  {ch.env} {ch.rollout_id}: {ch.before[0]:.3f} ({ch.before[1]}) -> {ch.after[0]:.3f} "
                     f"({ch.after[1]})")
    if len(c.changed) > _LISTED:
        lines.append(f"  ... and {len(c.changed) - _LISTED} more")
    return lines


def write_compare_html(c: Comparison, path: str | Path) -> Path:
    header, rows = _rows(c)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='{'sig' if t.endswith(' *') else ''}'>{html.escape(t)}</td>"
                                    for t in r) + "</tr>" for r in rows)
    runs = "".join(f"<li>{html.escape(r)}</li>" for r in c.runs)
    changes = "".join(f"<pre>{html.escape(chr(10).join(format_changes(ch, chr(66 + i))))}</pre>"
                      for i, ch in enumerate(c.changes) if ch is not None)
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>gym_ray compare</title><style>"
            "body{font:13px system-ui,sans-serif;margin:18px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ddd;padding:3px 8px;font-variant-numeric:tabular-nums}"
            "td.sig{background:#fef3c7;font-weight:600}</style></head><body><h1>gym_ray compare</h1>"
            f"<ol>{runs}</ol><table><tr>{th}</tr>{body}</table><p>{html.escape(_footnote(c))}</p>{changes}"
            "</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
