"""Write data/test.jsonl and data/train.jsonl from Wordle's 2,315 answers (data/solution_list.csv): a
seeded shuffle, the first 500 the test split, the rest train (the rules come with the first observation).
Rerun to regenerate the same files."""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).parent / "data"
SEED, TEST = 2315, 500


def main() -> None:
    answers = (DATA / "solution_list.csv").read_text().split()
    random.Random(SEED).shuffle(answers)
    for split, words in (("test", answers[:TEST]), ("train", answers[TEST:])):
        rows = [{"task_id": f"wordle-{split}-{n:04d}", "env": "wordle",
                 "prompt": [{"role": "user", "content": "Let's play Wordle."}],
                 "verifier_metadata": {"answer": word}} for n, word in enumerate(words)]
        out = DATA / f"{split}.jsonl"
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
