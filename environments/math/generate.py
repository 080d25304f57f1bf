"""Generate a seeded train/test set of arithmetic and algebra problems in our task shape.

    python environments/math/generate.py --num-train 500 --num-test 100 --seed 0

Writes `data/train.jsonl` and `data/test.jsonl` (disjoint: no question appears in both).
Every answer is computed exactly (integers or reduced fractions), so math-verify can check it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

SYSTEM = "Solve the problem. Put your final answer in \\boxed{}."


def _frac(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 12)
    op1, op2 = rng.choice("+-"), rng.choice("+-*")
    sign = 1 if op1 == "+" else -1
    value = a + sign * b * c if op2 == "*" else a + sign * b + (c if op2 == "+" else -c)
    return f"Compute {a} {op1} {b} {op2} {c}.", str(value), "arithmetic"


def fractions(rng: random.Random) -> tuple[str, str, str]:
    p, q = Fraction(rng.randint(1, 9), rng.randint(2, 9)), Fraction(rng.randint(1, 9), rng.randint(2, 9))
    op = rng.choice("+-*")
    value = {"+": p + q, "-": p - q, "*": p * q}[op]
    text = f"Compute {p.numerator}/{p.denominator} {op} {q.numerator}/{q.denominator} as a reduced fraction."
    return text, _frac(value), "fractions"


def linear_equation(rng: random.Random) -> tuple[str, str, str]:
    x, a, b = (
        rng.randint(-20, 20),
        rng.choice([i for i in range(-9, 10) if i not in (0, 1)]),
        rng.randint(-30, 30),
    )
    sign = "+" if b >= 0 else "-"
    return f"Solve for x: {a}x {sign} {abs(b)} = {a * x + b}.", str(x), "linear_equation"


def quadratic_roots(rng: random.Random) -> tuple[str, str, str]:
    r1, r2 = rng.randint(-12, 12), rng.randint(-12, 12)
    b, c = -(r1 + r2), r1 * r2
    poly = (
        "x^2"
        + (f" {'+' if b >= 0 else '-'} {abs(b)}x" if b else "")
        + (f" {'+' if c >= 0 else '-'} {abs(c)}" if c else "")
    )
    return f"What is the largest root of {poly} = 0?", str(max(r1, r2)), "quadratic"


def linear_system(rng: random.Random) -> tuple[str, str, str]:
    x, y = rng.randint(-10, 10), rng.randint(-10, 10)
    a, b, c, d = (rng.randint(1, 6) for _ in range(4))
    if a * d == b * c:
        d += 1
    return (
        f"If {a}x + {b}y = {a * x + b * y} and {c}x + {d}y = {c * x + d * y}, what is x + y?",
        str(x + y),
        "system",
    )


def percentage(rng: random.Random) -> tuple[str, str, str]:
    p, n = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75]), rng.randint(2, 400)
    return f"What is {p}% of {n}?", _frac(Fraction(p * n, 100)), "percentage"


def evaluate_polynomial(rng: random.Random) -> tuple[str, str, str]:
    a, b, c, x = rng.randint(1, 9), rng.randint(-9, 9), rng.randint(-20, 20), rng.randint(-6, 6)
    return f"Let f(x) = {a}x^2 + ({b})x + ({c}). What is f({x})?", str(a * x * x + b * x + c), "polynomial"


KINDS: list[Callable[[random.Random], tuple[str, str, str]]] = [
    arithmetic,
    fractions,
    linear_equation,
    quadratic_roots,
    linear_system,
    percentage,
    evaluate_polynomial,
]


def generate(num: int, rng: random.Random, split: str, seen: set[str]) -> list[dict]:
    rows: list[dict] = []
    while len(rows) < num:
        question, answer, kind = rng.choice(KINDS)(rng)
        if question in seen:
            continue
        seen.add(question)
        rows.append(
            {
                "task_id": f"math-{split}-{len(rows):05d}",
                "env": "math",
                "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                "verifier_metadata": {"expected_answer": answer, "kind": kind},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-train", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args(argv)
    rng, seen = random.Random(args.seed), set()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, num in (("test", args.num_test), ("train", args.num_train)):
        path = args.out_dir / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in generate(num, rng, split, seen)))
        print(f"wrote {num} tasks to {path}")


if __name__ == "__main__":
    main()
