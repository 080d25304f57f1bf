"""Generate tasks from reasoning-gym procedural datasets, by name, with the dataset's own settings.

    python environments/reasoning_gym/generate.py --dataset basic_arithmetic --size 500 --seed 0 \
        --config '{"min_terms": 2, "max_terms": 4}' --out environments/reasoning_gym/data/arith.jsonl
    python environments/reasoning_gym/generate.py --dataset leg_counting --dataset word_sorting ...

Each row keeps the generated entry (`question`, `answer`, `metadata`) in `verifier_metadata`, which is
what the dataset's `score_answer` needs (the same fields as NeMo Gym's reasoning_gym rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import reasoning_gym
from reasoning_gym.factory import DATASETS
from reasoning_gym.utils import SYSTEM_PROMPTS


def make_tasks(
    dataset: str, size: int, seed: int = 0, config: dict | None = None, env: str = "reasoning_gym"
) -> list[dict]:
    """`size` task rows of reasoning-gym dataset `dataset` (settings `config`), reproducible by `seed`."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    data = reasoning_gym.create_dataset(dataset, size=size, seed=seed, **(config or {}))
    rows = []
    for i, entry in enumerate(data):
        rows.append(
            {
                "task_id": f"{dataset}-{seed}-{i}",
                "env": env,
                "prompt": [
                    {"role": "system", "content": SYSTEM_PROMPTS["default"]},
                    {"role": "user", "content": entry["question"]},
                ],
                "verifier_metadata": json.loads(
                    json.dumps({k: entry[k] for k in ("question", "answer", "metadata")})
                ),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", action="append", required=True, help="dataset name (repeatable)")
    parser.add_argument("--size", type=int, default=100, help="tasks per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="JSON object of dataset settings (applies to each)")
    parser.add_argument("--env", default="reasoning_gym", help="the env name the rows carry")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    rows = [row for name in args.dataset for row in make_tasks(name, args.size, args.seed, config, args.env)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} tasks to {args.out}")


if __name__ == "__main__":
    main()
