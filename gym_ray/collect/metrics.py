"""Run metrics from rollout rows: mean reward, unbiased pass@k, tokens, turns, failures by status, and each
environment's headline metric (its server class's `metric` line: what the benchmark reports)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from gym_ray.collect.cost import cost_summary
from gym_ray.rundir import RunDir, read_run
from gym_ray.rundir.location import CONFIG, METRICS, Location
from gym_ray.stats import pass_at_k

_COLUMNS = [
    "group_id", "env", "task_id", "rollout_index", "group_size", "segment_index", "num_segments",
    "reward", "status", "num_turns", "num_tool_calls", "truncated", "response_loss_mask", "prompt_token_ids", "cost",
]


def _ks(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


HEADLINES = ("pass@k", "accuracy", "success_rate", "mean_reward")


def headline(m: dict, name: str) -> float:
    """The value of headline metric `name` in one environment's summary `m`: pass@1 for "pass@k" (pass@k
    for larger k are in the summary too), the share of episodes that reached the pass threshold for
    "accuracy" / "success_rate" (a failed episode did not), the mean reward otherwise."""
    if name == "pass@k":
        return m["pass@1"]
    return m["pass_rate"] if name in ("accuracy", "success_rate") else m["mean_reward"]


def env_metrics(envs: dict[str, str]) -> dict[str, str]:
    """Each environment's headline metric name, from its server class (`envs`: env name -> `module:Class`);
    an environment whose class does not import here (a run read on another machine) gets "mean_reward"."""
    from gym_ray.resources.runtime import import_server

    out = {}
    for env, server in envs.items():
        try:
            name = import_server(server).metric
        except ValueError:
            name = "mean_reward"
        out[env] = name if name in HEADLINES else "mean_reward"
    return out


class MetricsAccumulator:
    """Fed Arrow tables as groups finish; `summary()` at any time. Episodes are counted once (by segment 0).
    `metrics`: env name -> headline metric name (`env_metrics`); an env not named reports its mean reward."""

    def __init__(self, pass_threshold: float = 1.0, metrics: dict[str, str] | None = None):
        self.pass_threshold = pass_threshold
        self.metrics = dict(metrics or {})
        self._episodes: dict[str, list[dict]] = defaultdict(list)  # env -> per-episode records
        self._group_passes: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        t = table.select(_COLUMNS)
        mask_sums = [sum(m) for m in t["response_loss_mask"].to_pylist()]
        prompt_lens = pc.list_value_length(t["prompt_token_ids"]).to_pylist()
        resp_lens = pc.list_value_length(t["response_loss_mask"]).to_pylist()
        per_episode: dict[tuple[str, int], dict] = {}
        rows = t.drop_columns(["response_loss_mask", "prompt_token_ids"]).to_pylist()
        for row, gen, plen, rlen in zip(rows, mask_sums, prompt_lens, resp_lens, strict=True):
            key = (row["group_id"], row["rollout_index"])
            ep = per_episode.setdefault(
                key,
                {"env": row["env"], "group_id": row["group_id"], "status": "ok", "reward": 0.0, "turns": 0,
                 "tool_calls": 0, "generated_tokens": 0, "total_tokens": 0, "truncated": False, "segments": 0},
            )
            ep["segments"] += 1
            ep["turns"] += row["num_turns"]
            ep["tool_calls"] += row["num_tool_calls"]
            ep["generated_tokens"] += gen
            ep["total_tokens"] += plen + rlen
            ep["truncated"] = ep["truncated"] or row["truncated"]
            if row["status"] != "ok" and ep["status"] == "ok":
                ep["status"] = row["status"]
            if row["segment_index"] == row["num_segments"] - 1:
                ep["reward"] = row["reward"]
                ep["cost"] = row["cost"]  # the episode's, the same on every segment
        for ep in per_episode.values():
            self._episodes[ep["env"]].append(ep)
            passed = int(ep["status"] == "ok" and ep["reward"] >= self.pass_threshold)
            self._group_passes[ep["env"]][ep["group_id"]].append(passed)

    def summary(self) -> dict:
        per_env = {env: self._summarize(eps, self._group_passes[env]) for env, eps in sorted(self._episodes.items())}
        for env, m in per_env.items():
            name = self.metrics.get(env, "mean_reward")
            m["metric"], m["score"] = name, headline(m, name)
        all_eps = [ep for eps in self._episodes.values() for ep in eps]
        all_groups = {g: v for groups in self._group_passes.values() for g, v in groups.items()}
        return {"overall": self._summarize(all_eps, all_groups), "per_env": per_env,
                "pass_threshold": self.pass_threshold}

    @staticmethod
    def _summarize(eps: list[dict], groups: dict[str, list[int]]) -> dict:
        n = len(eps)
        if n == 0:
            return {"rollouts": 0, "groups": 0}
        statuses = Counter(ep["status"] for ep in eps)
        ok = [ep for ep in eps if ep["status"] == "ok"]
        min_group = min(len(v) for v in groups.values())
        pass_k = {
            f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in groups.values()) / len(groups)
            for k in _ks(min_group)
        }
        return {
            "rollouts": n,
            "groups": len(groups),
            "mean_reward": sum(ep["reward"] for ep in ok) / n,  # a failed episode scores 0
            "mean_reward_ok": sum(ep["reward"] for ep in ok) / len(ok) if ok else None,
            **pass_k,
            "pass_rate": sum(sum(v) for v in groups.values()) / n,
            "ok_rate": statuses.get("ok", 0) / n,
            "statuses": dict(sorted(statuses.items())),
            "mean_turns": sum(ep["turns"] for ep in eps) / n,
            "mean_tool_calls": sum(ep["tool_calls"] for ep in eps) / n,
            "generated_tokens": sum(ep["generated_tokens"] for ep in eps),
            "mean_generated_tokens": sum(ep["generated_tokens"] for ep in eps) / n,
            "mean_total_tokens": sum(ep["total_tokens"] for ep in eps) / n,
            "truncated_rate": sum(ep["truncated"] for ep in eps) / n,
            "multi_segment_rate": sum(ep["segments"] > 1 for ep in eps) / n,
            "cost": cost_summary([ep["cost"] for ep in eps if "cost" in ep], statuses.get("ok", 0)),
        }


def format_table(summary: dict) -> str:
    """A fixed-width table: one line per environment plus the total."""
    rows = [(env, m) for env, m in summary["per_env"].items()] + [("ALL", summary["overall"])]
    ks = sorted({k for _, m in rows for k in m if k.startswith("pass@")}, key=lambda s: int(s[5:]))
    header = ["env", "metric", "rollouts", "reward", *ks, "turns", "tools", "gen tok", "failures"]
    lines = []
    for env, m in rows:
        if not m.get("rollouts"):
            continue
        fails = ", ".join(f"{s}={c}" for s, c in m["statuses"].items() if s != "ok") or "-"
        lines.append([
            env, f"{m['metric']} {m['score']:.3f}" if "metric" in m else "", str(m["rollouts"]),
            f"{m['mean_reward']:.3f}", *(f"{m[k]:.3f}" if k in m else "" for k in ks),
            f"{m['mean_turns']:.2f}", f"{m['mean_tool_calls']:.2f}", f"{m['mean_generated_tokens']:.1f}", fails,
        ])
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, len(header) - 1) else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in lines]
    return "\n".join(out)


def write_metrics(summary: dict, run_dir: str | Path | RunDir) -> Location:
    """`.gym_ray/metrics.json` of the run directory, replaced whole."""
    run = RunDir.of(run_dir)
    path = run.meta(METRICS)
    run.write_bytes(path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return path


def metrics_from_dir(output_dir: str | Path | RunDir, pass_threshold: float = 1.0) -> dict:
    """Recompute the summary from the Parquet files of a run directory (`RunInputError` when there are none,
    or one is not rollout rows)."""
    acc = MetricsAccumulator(pass_threshold, env_metrics(_run_servers(output_dir)))
    acc.add(read_run(output_dir, _COLUMNS))
    return acc.summary()


def _run_servers(output_dir: str | Path | RunDir) -> dict[str, str]:
    """env name -> `server:` of the run's saved config (none saved, or unreadable: no headline metrics)."""
    run = RunDir.of(output_dir)
    path = run.meta(CONFIG)
    if not run.is_file(path):
        return {}
    try:
        envs = json.loads(run.read_bytes(path)).get("envs") or {}
    except (ValueError, AttributeError):  # an unreadable config: `gym-ray check` names it; no headline here
        return {}
    return {name: env["server"] for name, env in envs.items() if isinstance(env, dict) and "server" in env}
