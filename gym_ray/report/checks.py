"""`gym-ray check RUN_DIR`: health checks over a run's rows, a verdict per rollout and a summary.

Two severities. A *contract* break means the data is wrong for a trainer (a row breaks the token contract,
its text is not what its tokens say, a rollout is missing or twice there, a failed row carries a reward):
`gym-ray check` exits 1. A *warning* is about the model or the environment (runaway generation, empty
answers, tasks no rollout solves, groups with no GRPO signal): worth a look, exit 0.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gym_ray.agents.parsers import get_parser
from gym_ray.monitors.signals import json_list, no_reward_variance
from gym_ray.report.tree_checks import level, tree_findings, tree_shape
from gym_ray.rundir import RunDir, read_rollout_table, read_run
from gym_ray.rundir.location import CHECK, CONFIG
from gym_ray.types import Rollout, RolloutInvariantError

ERROR, WARNING = "error", "warning"

# name -> (severity, what it means); the order is the summary's order
CHECKS: dict[str, tuple[str, str]] = {
    "row_contract": (ERROR, "row breaks the token contract (lengths, spans, mask, failure record)"),
    "text_token_mismatch": (ERROR, "an assistant message is not the text of its generated tokens"),
    "failed_row_rewarded": (ERROR, "a failed row carries a reward, reward components or no mask_sample"),
    "duplicate_rollout": (ERROR, "the same (task, rollout_index, segment) is there twice"),
    "missing_rollout": (ERROR, "a group or episode lacks rows (rollout_index or segment absent)"),
    "missing_groups": (ERROR, "fewer groups than the run's tasks: the run did not finish (--resume)"),
    "tree_orphan_node": (ERROR, "a tree leaf whose parent_node_id is not its parent node, or is a leaf itself"),
    "tree_missing_leaf": (ERROR, "a tree node that branched lacks a child: no leaf row ends it or fails it"),
    "tree_prefix_mismatch": (ERROR, "sibling tree leaves differ before their branch_token_offset (tokens, "
                                    "logprobs, mask)"),
    "model_call_failed": (WARNING, "the episode ended on a failed model call (status model_error)"),
    "runaway_generation": (WARNING, "every model call hit max_tokens (finish reason 'length')"),
    "empty_final_answer": (WARNING, "the episode's last assistant message is empty"),
    "tool_call_parse_error": (WARNING, "the model wrote a tool call the parser could not read"),
    "task_always_fails": (WARNING, "no rollout of this task passes (reward below the threshold or failed)"),
    "zero_reward_variance": (WARNING, "every rollout of the group has the same reward: no GRPO signal"),
}

_COLUMNS = [
    "rollout_id", "group_id", "task_id", "env", "rollout_index", "group_size", "segment_index", "num_segments",
    "response_token_ids", "response_loss_mask", "response_logprobs", "gen_span_starts", "gen_span_ends",
    "call_finish_reasons", "gen_policy_versions", "reward", "reward_component_names", "reward_component_values",
    "status", "mask_sample", "failure_stage", "failure_kind", "prompt_messages_json", "messages_json",
    "tree_id", "node_id",
]
_ROW_FIELDS = [c for c in _COLUMNS if c in Rollout.model_fields]
# The other fields at their defaults, made once: model_construct would inspect each default factory's
# signature again for every row (half the time of checking 100k rows). Only read: rows are checked, not kept.
_ROW_DEFAULTS = {n: f.get_default(call_default_factory=True) for n, f in Rollout.model_fields.items()
                 if n not in _ROW_FIELDS and not f.is_required()}
_PARSE_ERROR = "could not be parsed ("  # parsers.parse_hermes's wording, sent back to the model


@dataclass
class Finding:
    check: str
    detail: str
    env: str
    task_id: str
    group_id: str
    rollout_id: str | None = None  # None for a finding about a whole group or task

    @property
    def severity(self) -> str:
        return CHECKS[self.check][0]


@dataclass
class CheckReport:
    run_dir: str
    rollouts: int
    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # checks that could not run, and why

    @property
    def counts(self) -> Counter:
        return Counter(f.check for f in self.findings)

    @property
    def contract_broken(self) -> bool:
        return any(f.severity == ERROR for f in self.findings)

    def verdicts(self) -> dict[str, list[str]]:
        """rollout_id -> the checks it fails; a rollout not listed passed every per-rollout check."""
        out: dict[str, list[str]] = defaultdict(list)
        for f in self.findings:
            if f.rollout_id is not None and f.check not in out[f.rollout_id]:
                out[f.rollout_id].append(f.check)
        return dict(out)

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "rollouts": self.rollouts, "contract_broken": self.contract_broken,
                "counts": {c: self.counts.get(c, 0) for c in CHECKS}, "skipped": self.skipped,
                "verdicts": self.verdicts(), "findings": [asdict(f) for f in self.findings]}


def run_checks(run_dir: str | Path, *, pass_threshold: float = 1.0, tokenizer: Any = None) -> CheckReport:
    """Every check over the finished rows of `run_dir`. `tokenizer` (an HF tokenizer) decodes generated
    tokens for `text_token_mismatch`; by default the run's own (from `.gym_ray/config.json`)."""
    rows = read_run(run_dir, _COLUMNS).to_pylist()
    report = CheckReport(run_dir=str(run_dir), rollouts=sum(r["segment_index"] == 0 for r in rows))
    if tokenizer is None:
        tokenizer, why = run_tokenizer(run_dir)
        if tokenizer is None:
            report.skipped.append(f"text_token_mismatch: {why}")
    parser = get_parser("hermes")
    add = report.findings.append
    for r in rows:
        where = {"env": r["env"], "task_id": r["task_id"], "group_id": r["group_id"], "rollout_id": r["rollout_id"]}
        for check, detail in _row_findings(r, tokenizer, parser):
            add(Finding(check, detail, **where))
    _identity_findings(run_dir, rows, add)
    for check, detail, r in tree_findings(run_dir):
        add(Finding(check, detail, r["env"], r["task_id"], r["group_id"], r["rollout_id"]))
    _outcome_findings(rows, pass_threshold, add)
    _manifest_findings(run_dir, rows, report)
    return report


def run_tokenizer(run_dir: str | Path) -> tuple[Any, str]:
    """The HF tokenizer the run's rows were made with, or None and why not: the one its config names, if
    its fingerprint (vocabulary + chat template) is the rows' own (a trainer's policy may bring another)."""
    cfg_path = RunDir.of(run_dir).meta(CONFIG)
    if not cfg_path.is_file():
        return None, f"{cfg_path} is missing (a run from before it was written)"
    try:
        from gym_ray.agents.tokenizer import load_tokenizer  # cached per process
        from gym_ray.config import ModelConfig
        from gym_ray.models.names import tokenizer_path_for

        model = ModelConfig(**json.loads(cfg_path.read_text())["model"])
        chat = load_tokenizer(tokenizer_path_for(model), model.chat_template)
    except Exception as e:  # noqa: BLE001 - any failure to load only skips the token comparison
        return None, f"the run's tokenizer does not load: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    rows = set(read_rollout_table(run_dir, ["tokenizer_fingerprint"])["tokenizer_fingerprint"].to_pylist())
    if chat.fingerprint not in rows:
        return None, (f"the rows were tokenized by another tokenizer (fingerprint {sorted(rows)[:3]}, the "
                      f"config's is {chat.fingerprint})")
    return chat.hf, ""


def _row_findings(r: dict, tokenizer: Any, parser) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    try:  # the schema already typed every column: construct without re-validating (100k rows)
        Rollout.model_construct(**_ROW_DEFAULTS, **{k: r[k] for k in _ROW_FIELDS}).check_invariants()
    except (RolloutInvariantError, ValueError) as e:
        out.append(("row_contract", str(e).splitlines()[0]))
    failed = r["status"] not in ("ok", "prefix_break")
    if failed and (r["reward"] != 0 or r["reward_component_names"] or not r["mask_sample"]):
        out.append(("failed_row_rewarded", f"status {r['status']} with reward {r['reward']}, "
                                           f"{len(r['reward_component_names'])} components, "
                                           f"mask_sample={r['mask_sample']}"))
    messages = json_list(r["messages_json"])
    generated = messages[len(json_list(r["prompt_messages_json"])):]
    assistant = [m for m in generated if m.get("role") == "assistant"]
    if r["status"] == "ok" and r["num_segments"] == 1:
        spans = list(zip(r["gen_span_starts"], r["gen_span_ends"], strict=False))
        if len(assistant) != len(spans):
            out.append(("text_token_mismatch", f"{len(assistant)} assistant messages for {len(spans)} "
                                               "generated spans"))
        elif tokenizer is not None:
            for i, (m, (s, e)) in enumerate(zip(assistant, spans, strict=True)):
                text = tokenizer.decode(r["response_token_ids"][s:e], skip_special_tokens=True)
                if not _same_text(m, text, parser):
                    out.append(("text_token_mismatch", f"assistant message {i}: {_short(m.get('content'))} "
                                                       f"but its tokens decode to {_short(text)}"))
                    break
    if r["call_finish_reasons"] and all(f == "length" for f in r["call_finish_reasons"]):
        out.append(("runaway_generation", f"{len(r['call_finish_reasons'])} of {len(r['call_finish_reasons'])} "
                                          "calls stopped at max_tokens"))
    if r["status"] == "model_error":
        out.append(("model_call_failed", f"failure at {r['failure_stage']} ({r['failure_kind']})"))
    last_segment = r["segment_index"] == r["num_segments"] - 1
    if last_segment and r["status"] == "ok" and generated and generated[-1].get("role") == "assistant":
        final = generated[-1]
        if not (final.get("content") or "").strip() and not final.get("tool_calls"):
            out.append(("empty_final_answer", "the last assistant message has no text"))
    errors = [m for m in generated if m.get("role") == "user" and _PARSE_ERROR in (m.get("content") or "")]
    if errors:
        out.append(("tool_call_parse_error", f"{len(errors)} unparseable tool call(s): "
                                             f"{_short(errors[0]['content'])}"))
    return out


def _same_text(message: dict, text: str, parser) -> bool:
    """The agents store the parser's content of the decoded ids (tool calls taken out), or the stripped
    text (step agents); either way the words must be the same."""
    content = " ".join((message.get("content") or "").split())
    parsed = parser(text)
    calls = [c.get("function", c).get("name") for c in message.get("tool_calls") or []]
    if calls and calls != [c.name for c in parsed.calls]:
        return False
    return content in (" ".join(parsed.content.split()), " ".join(text.split()))


def _identity_findings(run_dir: str | Path, rows: list[dict], add) -> None:
    """Each (task, rollout_index, segment) once, and every index of a group there; a tree leaf that ended
    early or failed stands for the indexes of its whole subtree."""
    width, depth = tree_shape(run_dir, [r["node_id"] for r in rows if r["tree_id"]])
    seen: Counter = Counter()
    episodes: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["env"], r["task_id"], r["rollout_index"], r["segment_index"])
        seen[key] += 1
        if seen[key] == 2:
            add(Finding("duplicate_rollout", f"rollout_index {r['rollout_index']} segment {r['segment_index']} "
                        "appears more than once", r["env"], r["task_id"], r["group_id"], r["rollout_id"]))
        group = episodes.setdefault((r["env"], r["task_id"]), {"group_id": r["group_id"], "size": r["group_size"],
                                                               "segments": defaultdict(set), "nseg": {}})
        group["segments"][r["rollout_index"]].add(r["segment_index"])
        group["nseg"][r["rollout_index"]] = r["num_segments"]
        span = width ** max(0, depth - level(r["node_id"])) if r["tree_id"] else 1
        group.setdefault("covered", set()).update(range(r["rollout_index"], r["rollout_index"] + span))
    for (env, task_id), g in episodes.items():
        absent = sorted(set(range(g["size"])) - g["covered"])
        if absent:
            add(Finding("missing_rollout", f"group of {g['size']} lacks rollout_index {absent}", env, task_id,
                        g["group_id"]))
        for idx, segs in g["segments"].items():
            if segs != set(range(g["nseg"][idx])):
                add(Finding("missing_rollout", f"rollout_index {idx} has segments {sorted(segs)} of "
                            f"{g['nseg'][idx]}", env, task_id, g["group_id"]))


def _outcome_findings(rows: list[dict], threshold: float, add) -> None:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["segment_index"] == r["num_segments"] - 1:  # the episode's outcome is on its last segment
            groups[(r["env"], r["task_id"], r["group_id"])].append(r)
    for (env, task_id, group_id), eps in groups.items():
        if not any(e["status"] == "ok" and e["reward"] >= threshold for e in eps):
            statuses = Counter(e["status"] for e in eps)
            add(Finding("task_always_fails", f"0 of {len(eps)} pass ({dict(statuses)}, best reward "
                        f"{max(e['reward'] for e in eps):g})", env, task_id, group_id))
        if no_reward_variance([e["reward"] for e in eps]):
            add(Finding("zero_reward_variance", f"all {len(eps)} rewards are {eps[0]['reward']:g}", env, task_id,
                        group_id))


def _manifest_findings(run_dir: str | Path, rows: list[dict], report: CheckReport) -> None:
    path = RunDir.of(run_dir).manifest
    try:
        expected = json.loads(path.read_text(encoding="utf-8"))["num_tasks"]
    except FileNotFoundError:
        return  # no manifest (rows written by other tools): nothing to compare with
    except (OSError, ValueError, KeyError, TypeError) as e:
        report.skipped.append(f"missing_groups: {path} is not a run manifest ({type(e).__name__}: {e})"[:300])
        return
    if type(expected) is not int:
        report.skipped.append(f"missing_groups: {path} has num_tasks {expected!r}, not a number of tasks"[:300])
        return
    found = len({(r["env"], r["task_id"]) for r in rows})
    if found < expected:
        report.findings.append(Finding("missing_groups", f"{found} of {expected} tasks have rows ({path})", "", "",
                                       ""))


def _short(text: str | None, n: int = 80) -> str:
    text = " ".join((text or "").split())
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def format_check(report: CheckReport, examples: int = 1) -> str:
    """The terminal summary: one line per check that found something, then the verdict."""
    counts = report.counts
    lines = [f"{report.rollouts} rollouts checked in {report.run_dir}"]
    first: dict[str, Finding] = {}
    for f in report.findings:
        first.setdefault(f.check, f)
    width = max(len(c) for c in CHECKS)
    for check, (severity, what) in CHECKS.items():
        n = counts.get(check, 0)
        mark = "ok  " if n == 0 else ("FAIL" if severity == ERROR else "warn")
        line = f"  {mark}  {check:<{width}}  {n:>6}  {what}"
        if n and examples:
            f = first[check]
            at = f"rollout {f.rollout_id}" if f.rollout_id else f"group {f.group_id}" if f.group_id else "run"
            line += f"\n        e.g. {f.env}/{f.task_id} {at}: {f.detail}" if f.env else f"\n        {f.detail}"
        lines.append(line)
    lines += [f"  skipped: {s}" for s in report.skipped]
    flagged = len(report.verdicts())
    verdict = "CONTRACT BROKEN" if report.contract_broken else "contract holds"
    lines.append(f"{verdict}: {flagged} of {report.rollouts} rollouts flagged, "
                 f"{sum(counts[c] for c in CHECKS if CHECKS[c][0] == WARNING)} warnings")
    return "\n".join(lines)


def write_check(report: CheckReport) -> Path:
    path = RunDir.of(report.run_dir).meta(CHECK)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    tmp.replace(path)
    return path
