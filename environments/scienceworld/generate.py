"""Write ScienceWorld's official train/dev/test splits as task rows: `python generate.py` (needs Java).

The splits are the simulator's own variation lists per task (`get_variations_train/dev/test`); a row names
the task and the variation, and the simulator writes the task's text when the episode starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from gym_ray_env_scienceworld.server import SYSTEM, start, stop

SPLITS = ("train", "dev", "test")


def rows_by_split() -> dict[str, list[dict]]:
    sim = start("boil", 0, "", 100)
    try:
        rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for task_name in sim.get_task_names():
            sim.load(task_name, 0, "")
            lists = (sim.get_variations_train(), sim.get_variations_dev(), sim.get_variations_test())
            for split, variations in zip(SPLITS, lists, strict=True):
                rows[split] += [{"task_id": f"{task_name}/{v}", "env": "scienceworld",
                                 "prompt": [{"role": "system", "content": SYSTEM}],
                                 "verifier_metadata": {"task_name": task_name, "variation": int(v)}}
                                for v in sorted(variations)]
        return rows
    finally:
        stop(sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split().items():
        pq.write_table(pa.Table.from_pylist(rows), args.out / f"{split}.parquet", compression="zstd")
        print(f"{split}: {len(rows)} rows -> {args.out / f'{split}.parquet'}")


if __name__ == "__main__":
    main()
