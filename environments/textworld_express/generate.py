"""Write TextWorldExpress task rows per fold: `python generate.py` (needs Java).

The folds are the simulator's own seed ranges per game (`getValidSeedsTrain/Dev/Test`, 1,000 each); a row
names the game, its parameters (the simulator's defaults unless `--params` says otherwise), the fold and the
seed, and the game writes its own text when the episode starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from gym_ray_env_textworld_express.server import GAMES, SYSTEM, start, stop

FOLDS = ("train", "dev", "test")


def rows_by_fold(games: list[str], params: str) -> dict[str, list[dict]]:
    sim = start(100)
    try:
        rows: dict[str, list[dict]] = {fold: [] for fold in FOLDS}
        for game in games:
            sim.load(game, params)
            seeds = (sim.getValidSeedsTrain(), sim.getValidSeedsDev(), sim.getValidSeedsTest())
            for fold, fold_seeds in zip(FOLDS, seeds, strict=True):
                rows[fold] += [{"task_id": f"{game}/{fold}/{seed}", "env": "textworld_express",
                                "prompt": [{"role": "system", "content": SYSTEM}],
                                "verifier_metadata": {"game": game, "params": params, "fold": fold, "seed": int(seed)}}
                               for seed in sorted(fold_seeds)]
        return rows
    finally:
        stop(sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--games", nargs="+", default=list(GAMES))
    parser.add_argument("--params", default="", help="game parameters, e.g. numLocations=5,includeDoors=1")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for fold, rows in rows_by_fold(args.games, args.params).items():
        pq.write_table(pa.Table.from_pylist(rows), args.out / f"{fold}.parquet", compression="zstd")
        print(f"{fold}: {len(rows)} rows -> {args.out / f'{fold}.parquet'}")


if __name__ == "__main__":
    main()
