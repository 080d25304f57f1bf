"""Write data/example.jsonl: one task per (category, phrasing), with example answers for `on_topic`."""

import json
from pathlib import Path

CATEGORIES = {
    "animal": ["cat", "dog", "horse", "lion", "tiger", "cow", "elephant", "bird", "fish", "rabbit", "bear", "wolf"],
    "color": ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "pink", "brown", "grey"],
    "fruit": ["apple", "banana", "orange", "pear", "grape", "mango", "cherry", "lemon", "peach", "strawberry"],
    "vegetable": ["carrot", "potato", "tomato", "onion", "broccoli", "cabbage", "lettuce", "pea", "spinach"],
    "planet": ["mercury", "venus", "earth", "mars", "jupiter", "saturn", "uranus", "neptune"],
    "metal": ["iron", "gold", "silver", "copper", "aluminium", "aluminum", "tin", "lead", "zinc", "steel"],
    "country": ["france", "germany", "italy", "spain", "china", "japan", "india", "brazil", "canada", "usa"],
    "sport": ["football", "soccer", "tennis", "basketball", "golf", "cricket", "rugby", "swimming", "baseball"],
    "musical instrument": ["piano", "guitar", "violin", "drums", "flute", "trumpet", "cello", "harp"],
    "day of the week": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "month": ["january", "february", "march", "april", "may", "june", "july", "august", "september",
              "october", "november", "december"],
    "shape": ["circle", "square", "triangle", "rectangle", "oval", "star", "hexagon", "pentagon"],
    "drink": ["water", "tea", "coffee", "milk", "juice", "lemonade", "soda"],
    "body part": ["hand", "arm", "leg", "head", "foot", "eye", "ear", "nose", "mouth", "heart"],
    "tree": ["oak", "pine", "maple", "birch", "willow", "elm", "palm", "cedar"],
    "ocean": ["pacific", "atlantic", "indian", "arctic", "southern"],
}
PHRASINGS = [
    "Name a {c}. Answer with one word.",
    "Give me one {c}, in a single word.",
    "What is your favourite {c}? Reply with just one word.",
    "One word only: name a {c}.",
]


def main() -> None:
    rows = [{"task_id": f"one_word-{i * len(PHRASINGS) + j}", "env": "one_word",
             "prompt": [{"role": "user", "content": p.format(c=c)}],
             "verifier_metadata": {"category": c, "examples": examples}}
            for i, (c, examples) in enumerate(CATEGORIES.items()) for j, p in enumerate(PHRASINGS)]
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
