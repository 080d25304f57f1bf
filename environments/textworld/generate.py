"""Write TextWorld task rows per fold: `python generate.py` (rows only: each game is generated when an
episode first plays it, see games.py).

A row names the challenge, its settings (`server.GAMES`, with the fold's own content split where the
challenge has one, `server.FOLD_SETTINGS`) and a seed from the fold's range (`server.FOLD_SEEDS`: train
0-999, dev 10000-10999, test 20000-20999 by default). `--settings` gives other settings for the chosen
challenges, e.g. `--challenges tw-coin_collector --settings '{"level": 110}' --tag level110`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from gym_ray_env_textworld.games import full_settings
from gym_ray_env_textworld.server import FOLD_SEEDS, FOLD_SETTINGS, GAMES, SYSTEM


def rows_by_fold(challenges: list[str], per_fold: int, settings: dict | None = None,
                 tag: str = "") -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {fold: [] for fold in FOLD_SEEDS}
    for challenge in challenges:
        for fold, low in FOLD_SEEDS.items():
            chosen = {**GAMES[challenge], **(settings or {}), **FOLD_SETTINGS.get(challenge, {}).get(fold, {})}
            full_settings(challenge, chosen)  # unknown or missing settings fail here, not in an episode
            name = f"{challenge}{'-' + tag if tag else ''}"
            rows[fold] += [{"task_id": f"{name}/{fold}/{seed}", "env": "textworld",
                            "prompt": [{"role": "system", "content": SYSTEM}],
                            "verifier_metadata": {"challenge": challenge, "settings": json.dumps(chosen, sort_keys=True),
                                                  "split": fold, "seed": seed}}
                           for seed in range(low, low + per_fold)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--challenges", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--per-fold", type=int, default=1000, help="seeds per challenge and fold")
    parser.add_argument("--settings", type=json.loads, default=None, help="settings over server.GAMES' (JSON)")
    parser.add_argument("--tag", default="", help="task_id suffix of the challenge for other settings")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for fold, rows in rows_by_fold(args.challenges, args.per_fold, args.settings, args.tag).items():
        pq.write_table(pa.Table.from_pylist(rows), args.out / f"{fold}.parquet", compression="zstd")
        print(f"{fold}: {len(rows)} rows -> {args.out / f'{fold}.parquet'}")


if __name__ == "__main__":
    main()
