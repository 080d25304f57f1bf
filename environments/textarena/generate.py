"""Write data/example.jsonl: TextArena single-player games (no game here needs a corpus download), one task
per (game, seed); the seed fixes the game (the hidden number, the puzzle)."""

import json
from pathlib import Path

GAMES = {
    "GuessTheNumber-v0": "Guess the hidden number. Each turn, reply with your guess in square brackets, e.g. [7].",
    "TowerOfHanoi-v0": "Solve the Tower of Hanoi. Each turn, reply with one move in square brackets, e.g. [A C].",
}


def main() -> None:
    rows = [{"task_id": f"textarena-{game.split('-')[0]}-{seed}", "env": "textarena",
             "prompt": [{"role": "system", "content": f"You are playing a TextArena game. {hint}"}],
             "verifier_metadata": {"env_id": game, "seed": seed}}
            for game, hint in GAMES.items() for seed in range(4)]
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
