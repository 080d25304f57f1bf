"""search: answer a question from a local corpus with `search` (BM25 over the pages) and `open_page`;
scored by exact match (SQuAD normalisation) or token F1 against the gold answers."""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from pathlib import Path

from gym_ray import ResourceServer, VerifyResult, extract_tag, final_answer, tool, tool_results

_TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class BM25:
    """Okapi BM25 over whole pages (k1 1.5, b 0.75): a dozen lines, no index library needed at this size."""

    def __init__(self, docs: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.docs = [Counter(tokens(d)) for d in docs]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / len(self.docs)
        df = Counter(t for d in self.docs for t in d)
        self.idf = {t: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5)) for t, n in df.items()}
        self.k1, self.b = k1, b

    def rank(self, query: str) -> list[tuple[int, float]]:
        q = set(tokens(query))
        scores = []
        for i, (doc, length) in enumerate(zip(self.docs, self.lengths, strict=True)):
            s = sum(self.idf[t] * doc[t] * (self.k1 + 1) / (doc[t] + self.k1 * (1 - self.b + self.b * length / self.avg))
                    for t in q if t in doc)
            if s > 0:
                scores.append((i, s))
        return sorted(scores, key=lambda x: -x[1])


class Search(ResourceServer):
    verifier = "exact match or F1 of `<answer>`"
    origin = "native (shipped corpus)"

    def __init__(self, corpus: str = "data/corpus.jsonl", top_k: int = 3, metric: str = "em") -> None:
        if metric not in ("em", "f1"):
            raise ValueError(f"config.metric: {metric!r}; expected 'em' or 'f1'")
        path = Path(corpus) if Path(corpus).is_absolute() else Path(__file__).parent / corpus
        if not path.is_file():
            raise ValueError(f"config.corpus: {path} is not a file")
        self.pages = {p["title"]: p["text"] for p in map(json.loads, path.read_text().splitlines())}
        self.titles = list(self.pages)
        self.index = BM25([f"{t}. {self.pages[t]}" for t in self.titles])
        self.top_k, self.metric = top_k, metric

    @tool
    def search(self, query: str) -> str:
        """Search the encyclopedia; returns the best matching page titles with their first sentence.

        Args:
            query: What to look for, e.g. "river Selde".
        """
        hits = self.index.rank(query)[: self.top_k]
        if not hits:
            return "No results."
        return "\n".join(f"{n}. {self.titles[i]}: {self.pages[self.titles[i]].split('. ')[0]}."
                         for n, (i, _) in enumerate(hits, 1))

    @tool
    def open_page(self, title: str) -> str:
        """Open an encyclopedia page by its exact title; returns the whole page.

        Args:
            title: The page title, as search shows it.
        """
        text = self.pages.get(title.strip())
        if text is None:
            raise KeyError(f"no page titled {title!r}; use search to find titles")
        return f"# {title.strip()}\n{text}"

    def verify(self, task, messages):
        answer = final_answer(messages)
        if answer is None:
            return VerifyResult(reward=0.0, info={"reason": "no final answer"})
        predicted = extract_tag(answer, "answer")
        if predicted is None:
            return VerifyResult(reward=0.0, components={"em": 0.0, "f1": 0.0},
                                info={"reason": "no <answer></answer> in the final answer"})
        golds = task.verifier_metadata["answers"]
        em = float(any(normalize(predicted) == normalize(g) for g in golds))
        best_f1 = max(f1(predicted, g) for g in golds)
        page = task.verifier_metadata.get("page")
        opened = float(any(r.startswith(f"# {page}\n") for r in tool_results(messages, "open_page")))
        return VerifyResult(reward=em if self.metric == "em" else best_f1,
                            components={"em": em, "f1": best_f1, "opened_gold_page": opened},
                            info={"predicted": predicted})
