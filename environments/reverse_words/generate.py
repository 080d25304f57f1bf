"""Write data/example.jsonl: one task per reset seed (the seed picks the words)."""

import json
from pathlib import Path

SYSTEM = "You are playing a word game. Each turn, reply with the reversed word only, nothing else."


def main() -> None:
    rows = [{"task_id": f"reverse_words-{seed}", "env": "reverse_words",
             "prompt": [{"role": "system", "content": SYSTEM}], "verifier_metadata": {"seed": seed}}
            for seed in range(8)]
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
