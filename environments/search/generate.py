"""Write data/corpus.jsonl (pages about made-up towns, so no model knows the answers without reading) and
data/example.jsonl (questions: one hop, "Who founded Vellmar?", and two hops, "Who founded the town on the
river Selde?", where the page must first be found by what it says). Fixed seed; nothing is fetched."""

from __future__ import annotations

import json
import random
from pathlib import Path

SYLLABLES = ["vel", "mar", "os", "trand", "sel", "de", "bra", "kin", "lo", "ren", "ta", "vis", "qua", "mon",
             "dor", "fen", "gal", "hus", "ir", "jor", "lum", "nav", "pel", "ros", "sut", "ul", "wen", "zar"]
FIRST = ["Amalia", "Bertold", "Corin", "Dagna", "Elric", "Fenna", "Gustav", "Hilde", "Ivo", "Jorun", "Kasimir",
         "Liesel", "Magnus", "Nora", "Otmar", "Petra", "Quirin", "Rosa", "Sigrun", "Tobias"]
KNOWN_FOR = ["glass bells", "salt mines", "a floating market", "blue cheese", "clockmakers", "a stone bridge",
             "paper lanterns", "wool weaving", "a lighthouse", "copper kettles", "rose gardens", "horse fairs"]
QUESTIONS = {
    "founder": ("Who founded {town}?", "Who founded the town on the river {river}?"),
    "year": ("In which year was {town} founded?", "In which year was the town on the river {river} founded?"),
    "province": ("In which province is {town}?", "In which province is the town founded by {founder}?"),
    "river": ("Which river flows through {town}?", "Which river flows through the town founded by {founder}?"),
}


def name(rng: random.Random, parts: int, used: set[str]) -> str:
    while True:
        word = "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()
        if word not in used:
            used.add(word)
            return word


def main() -> None:
    rng = random.Random(16)
    used: set[str] = set()
    provinces = [name(rng, 2, used) for _ in range(6)]
    towns = []
    for i in range(30):
        town = {"town": name(rng, 2, used), "river": name(rng, 2, used), "province": provinces[i % 6],
                "year": 1100 + rng.randrange(800), "founder": f"{rng.choice(FIRST)} {name(rng, 2, used)}",
                "known_for": KNOWN_FOR[i % len(KNOWN_FOR)]}
        towns.append(town)
    pages = [{"title": t["town"], "text": (
        f"{t['town']} is a town in the province of {t['province']}. It was founded in {t['year']} by "
        f"{t['founder']}. The river {t['river']} flows through {t['town']}. The town is known for "
        f"{t['known_for']}.")} for t in towns]
    pages += [{"title": p, "text": f"{p} is a province. Its towns are "
               + ", ".join(t["town"] for t in towns if t["province"] == p) + "."} for p in provinces]
    rows = []
    for i, t in enumerate(towns):
        kind = list(QUESTIONS)[i % 4]
        hops = 1 + (i // 4) % 2
        question = QUESTIONS[kind][hops - 1].format(**t)
        rows.append({"task_id": f"search-{i}", "env": "search",
                     "prompt": [{"role": "system", "content": "Answer the question from the encyclopedia: use "
                                 "search and open_page, then give the answer inside <answer></answer>."},
                                {"role": "user", "content": question}],
                     "verifier_metadata": {"answers": [str(t[kind])], "page": t["town"], "hops": hops}})
    data = Path(__file__).parent / "data"
    (data / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    (data / "example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(pages)} pages, {len(rows)} tasks -> {data}")


if __name__ == "__main__":
    main()
