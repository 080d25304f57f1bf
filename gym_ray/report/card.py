"""The Hugging Face dataset card of a run: `.gym_ray/README.md`, with the schema, the config and the metrics.

It sits in `.gym_ray/` and not at the top because pandas and pyarrow read every top-level file of the
directory as Parquet (gym_ray.rundir); on the Hub it goes to the repo root, where its `configs:` header points
`load_dataset("user/name")` at the part files.
"""

from __future__ import annotations

import json
from pathlib import Path

from gym_ray.collect.metrics import format_table
from gym_ray.rundir import RunDir
from gym_ray.rundir.location import CARD, CONFIG, METRICS
from gym_ray.types import ROLLOUT_SCHEMA

# one line per column group; the README's "Rollout rows" section says more
_COLUMN_NOTES = {
    "rollout_id": "episode id (segments of one episode share it)", "group_id": "GRPO group (one task, group_size rollouts)",
    "task_id": "the task", "env": "environment", "rollout_index": "index in the group", "group_size": "rollouts per task",
    "segment_index": "segment of the episode (a history rewrite starts a new one)", "num_segments": "segments of the episode",
    "attempt": "earlier tries (infrastructure retries)", "model": "policy name", "policy_version": "oldest policy version used",
    "tokenizer_fingerprint": "hash of vocabulary + chat template", "sampling_params_json": "sampling (JSON)",
    "prompt_token_ids": "prompt ids as the engine saw them", "response_token_ids": "generated and tool/template ids",
    "response_loss_mask": "1 on generated tokens, 0 on tool/template tokens",
    "response_logprobs": "engine logprobs of generated tokens (0 elsewhere)",
    "gen_span_starts": "start of each generation in the response", "gen_span_ends": "end of each generation",
    "call_finish_reasons": "finish reason of each generation", "gen_policy_versions": "policy version of each generation",
    "reward": "verifier reward (0 on failed rows, never inferred)", "reward_component_names": "named reward parts",
    "reward_component_values": "their values", "turn_rewards": "per-step rewards (step environments)",
    "num_turns": "model calls", "num_tool_calls": "tool calls", "truncated": "stopped by a limit, not by an answer",
    "status": "ok, env_error, model_error, timeout, infra_error, aborted, prefix_break",
    "mask_sample": "true: leave out of the loss", "error": "what went wrong (failed rows)",
    "failure_stage": "where it failed", "failure_kind": "how it failed", "failure_delivery": "whether the request arrived",
    "prompt_messages_json": "prompt chat (JSON)", "messages_json": "whole conversation (JSON)",
    "task_json": "the task row (JSON)", "metrics_json": "episode timings and stop reason (JSON)",
    "created_at": "when the row was written",
    "cost": "what the episode cost: wall and CPU seconds per stage, tokens in/out, sandbox, retries",
}


def card_text(run_dir: str | Path, check_summary: str | None = None) -> str:
    run = RunDir.of(run_dir)
    d = run.path
    metrics = _json(run.meta(METRICS))
    config = _json(run.meta(CONFIG))
    manifest = _json(run.manifest)
    envs = sorted(metrics.get("per_env", {})) if metrics else []
    n = metrics.get("overall", {}).get("rollouts", "?") if metrics else "?"
    header = ["---", "configs:", "- config_name: default", '  data_files: "part-*.parquet"',
              "tags: [gym_ray, reinforcement-learning, rollouts, llm-agents]", "---", ""]
    body = [f"# gym_ray rollouts: {d.name}", "",
            f"{n} rollouts from {', '.join(envs) or 'no environment'}, collected by gym_ray "
            f"(run id `{manifest.get('run_id', '?')}`, {manifest.get('num_repeats', '?')} rollouts per task, "
            f"{len(run.parts())} Parquet files). One row per linear segment of an episode; token ids are "
            "exactly what the engine saw and sampled.", "",
            "## Load", "", "```python",
            "import datasets, pandas, ray",
            f'datasets.load_dataset("{d}", split="train")      # or load_dataset("user/name") once pushed',
            f'pandas.read_parquet("{d}")', f'ray.data.read_parquet("{d}")', "```", "",
            "## Push to the Hub", "",
            "The card lives in `.gym_ray/` so that pandas can read the directory; on the Hub it is the README:", "",
            "```bash",
            f'hf upload USER/NAME {d} . --repo-type dataset --include "part-*.parquet"',
            f"hf upload USER/NAME {d}/.gym_ray/README.md README.md --repo-type dataset", "```", ""]
    if metrics:
        body += ["## Metrics", "", "```", format_table(metrics), "```", ""]
    if check_summary:
        body += ["## Health checks (`gym-ray check`)", "", "```", check_summary, "```", ""]
    body += ["## Schema", "", "| column | type | what |", "|---|---|---|"]
    body += [f"| `{f.name}` | `{f.type}` | {_COLUMN_NOTES.get(f.name, '')} |" for f in ROLLOUT_SCHEMA]
    if config:
        body += ["", "## Run config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```"]
    return "\n".join(header + body) + "\n"


def write_card(run_dir: str | Path, check_summary: str | None = None) -> Path:
    path = RunDir.of(run_dir).meta(CARD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card_text(run_dir, check_summary), encoding="utf-8")
    return path


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
