"""Write data/example.jsonl: short writing tasks, each under 1-3 compatible IFEval-style instructions with
seeded random kwargs (no data is fetched; rerun to regenerate the same file)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from gym_ray_env_ifeval.checks import CONFLICTS, INSTRUCTIONS, phrase

TOPICS = ["a rainy day in a small town", "why bees matter", "a letter to a future self", "how to brew tea",
          "the history of the bicycle", "a review of an imaginary restaurant", "tips for a first marathon",
          "a lighthouse keeper's morning", "the benefits of reading aloud", "a product pitch for a smart umbrella"]
KEYWORDS = ["river", "lantern", "harvest", "orbit", "velvet", "compass", "meadow", "signal"]
FORBIDDEN = ["very", "really", "thing", "good", "nice", "just"]
ENDINGS = ["Is there anything else I can help with?", "That is all for today.", "Stay curious."]


def kwargs_for(instruction_id: str, rng: random.Random) -> dict:
    match instruction_id:
        case "length_constraints:number_words":
            return {"relation": rng.choice(["at least", "less than"]), "num_words": rng.choice([20, 40, 60, 80])}
        case "detectable_format:number_bullet_lists":
            return {"num_bullets": rng.randint(2, 5)}
        case "keywords:existence":
            return {"keywords": rng.sample(KEYWORDS, 2)}
        case "keywords:forbidden_words":
            return {"forbidden_words": rng.sample(FORBIDDEN, 2)}
        case "startend:end_checker":
            return {"end_phrase": rng.choice(ENDINGS)}
        case "detectable_format:number_paragraphs":
            return {"num_paragraphs": rng.randint(2, 4)}
        case "detectable_content:postscript":
            return {"postscript_marker": rng.choice(["P.S.", "P.P.S"])}
    return {}


def main() -> None:
    rng = random.Random(16)
    ids = sorted(INSTRUCTIONS)
    rows = []
    for i in range(40):
        chosen: list[str] = []
        for instruction_id in rng.sample(ids, len(ids)):
            if len(chosen) == 1 + i % 3:
                break
            if all(frozenset({instruction_id, c}) not in CONFLICTS for c in chosen):
                chosen.append(instruction_id)
        instructions = [{"id": c, "kwargs": kwargs_for(c, rng)} for c in chosen]
        text = f"Write about {TOPICS[i % len(TOPICS)]}. " + " ".join(phrase(x["id"], x["kwargs"]) for x in instructions)
        rows.append({"task_id": f"ifeval-{i}", "env": "ifeval", "prompt": [{"role": "user", "content": text}],
                     "verifier_metadata": {"instructions": instructions}})
    assert all(len({x["id"] for x in r["verifier_metadata"]["instructions"]}) >= 1 for r in rows)
    used = set(itertools.chain.from_iterable([x["id"] for x in r["verifier_metadata"]["instructions"]] for r in rows))
    assert used == set(ids), sorted(set(ids) - used)  # every instruction appears in some task
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
