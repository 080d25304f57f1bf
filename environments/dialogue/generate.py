"""Write data/example.jsonl: booking dialogues; each task's hidden customer profile is what the simulated
user knows and the verifier checks (fixed seed)."""

import json
import random
from pathlib import Path

NAMES = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Brennan", "Haddad", "Kowalski", "Rossi"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["18:00", "18:30", "19:00", "19:30", "20:00", "20:30", "21:00"]
OPENINGS = ["Hi, I'd like to book a table, please.", "Hello! Can I reserve a table?",
            "Good evening, I want to make a reservation."]
SYSTEM = ("You are the booking assistant of a restaurant. Ask the customer for their name, the party size, the "
          "day and the time, one question at a time. When you know all four, reply with the booking as "
          '<booking>{"name": "...", "party_size": 2, "day": "...", "time": "HH:MM"}</booking>.')


def main() -> None:
    rng = random.Random(16)
    rows = []
    for i in range(12):
        profile = {"name": NAMES[i % len(NAMES)], "party_size": rng.randint(1, 8), "day": rng.choice(DAYS),
                   "time": rng.choice(TIMES)}
        rows.append({"task_id": f"dialogue-{i}", "env": "dialogue", "prompt": [{"role": "system", "content": SYSTEM}],
                     "verifier_metadata": {"profile": profile, "opening": OPENINGS[i % len(OPENINGS)]}})
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
