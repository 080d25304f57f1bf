"""Write data/example.jsonl: small Python repositories, each with one bug, a visible failing test and
hidden tests (the verifier's); `reference_fix` is the one-line patch the scripted policy of the tests
applies (never shown to the model)."""

from __future__ import annotations

import json
from pathlib import Path

# (module, source with the bug, (old, new) the fix, visible test body, hidden test body)
REPOS = [
    ("stats", "def mean(xs):\n    \"\"\"The arithmetic mean of a non-empty list.\"\"\"\n    return sum(xs) / (len(xs) - 1)\n",
     ("(len(xs) - 1)", "len(xs)"),
     "self.assertEqual(stats.mean([2, 4, 6]), 4)",
     "self.assertEqual(stats.mean([5]), 5)\n        self.assertAlmostEqual(stats.mean([1, 2]), 1.5)"),
    ("mathx", "def factorial(n):\n    \"\"\"n! for n >= 0.\"\"\"\n    out = 1\n    for k in range(1, n):\n        out *= k\n    return out\n",
     ("range(1, n)", "range(1, n + 1)"),
     "self.assertEqual(mathx.factorial(4), 24)",
     "self.assertEqual(mathx.factorial(0), 1)\n        self.assertEqual(mathx.factorial(6), 720)"),
    ("bounds", "def clamp(x, lo, hi):\n    \"\"\"x limited to [lo, hi].\"\"\"\n    return max(hi, min(lo, x))\n",
     ("max(hi, min(lo, x))", "max(lo, min(hi, x))"),
     "self.assertEqual(bounds.clamp(4, 0, 10), 4)",
     "self.assertEqual(bounds.clamp(-3, 0, 10), 0)\n        self.assertEqual(bounds.clamp(15, 0, 10), 10)"),
    ("text", "def word_count(s):\n    \"\"\"How many whitespace-separated words s has.\"\"\"\n    return len(s.split(\" \"))\n",
     ("s.split(\" \")", "s.split()"),
     "self.assertEqual(text.word_count(\"a  b\"), 2)",
     "self.assertEqual(text.word_count(\"\"), 0)\n        self.assertEqual(text.word_count(\" one two\\tthree \"), 3)"),
    ("temps", "def c_to_f(c):\n    \"\"\"Celsius to Fahrenheit.\"\"\"\n    return c * 5 / 9 + 32\n",
     ("c * 5 / 9 + 32", "c * 9 / 5 + 32"),
     "self.assertEqual(temps.c_to_f(100), 212)",
     "self.assertEqual(temps.c_to_f(0), 32)\n        self.assertEqual(temps.c_to_f(-40), -40)"),
    ("search", "def index_of(xs, x):\n    \"\"\"Index of x in the sorted list xs, or -1.\"\"\"\n    lo, hi = 0, len(xs) - 1\n"
               "    while lo < hi:\n        mid = (lo + hi) // 2\n        if xs[mid] == x:\n            return mid\n"
               "        if xs[mid] < x:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1\n",
     ("while lo < hi:", "while lo <= hi:"),
     "self.assertEqual(search.index_of([1, 3, 5], 5), 2)",
     "self.assertEqual(search.index_of([7], 7), 0)\n        self.assertEqual(search.index_of([1, 3, 5], 4), -1)"),
    ("fizz", "def fizzbuzz(n):\n    \"\"\"'FizzBuzz' for multiples of 15, 'Fizz' of 3, 'Buzz' of 5, else str(n).\"\"\"\n"
             "    if n % 3 == 0:\n        return \"Fizz\"\n    if n % 5 == 0:\n        return \"Buzz\"\n"
             "    if n % 15 == 0:\n        return \"FizzBuzz\"\n    return str(n)\n",
     ("    if n % 3 == 0:\n        return \"Fizz\"\n", "    if n % 15 == 0:\n        return \"FizzBuzz\"\n    if n % 3 == 0:\n        return \"Fizz\"\n"),
     "self.assertEqual(fizz.fizzbuzz(30), \"FizzBuzz\")",
     "self.assertEqual(fizz.fizzbuzz(9), \"Fizz\")\n        self.assertEqual(fizz.fizzbuzz(10), \"Buzz\")\n"
     "        self.assertEqual(fizz.fizzbuzz(7), \"7\")"),
    ("strings", "def is_palindrome(s):\n    \"\"\"Whether s reads the same backwards, ignoring case.\"\"\"\n    return s == s[::-1]\n",
     ("return s == s[::-1]", "return s.lower() == s.lower()[::-1]"),
     "self.assertTrue(strings.is_palindrome(\"Level\"))",
     "self.assertFalse(strings.is_palindrome(\"Levels\"))\n        self.assertTrue(strings.is_palindrome(\"\"))"),
]


def test_file(module: str, name: str, body: str) -> str:
    return (f"import unittest\n\nimport {module}\n\n\nclass {name}(unittest.TestCase):\n    def test_it(self):\n"
            f"        {body}\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n")


def main() -> None:
    rows = []
    for i, (module, source, (old, new), visible, hidden) in enumerate(REPOS):
        assert source.count(old) == 1, module
        files = {f"{module}.py": source, f"test_{module}.py": test_file(module, "Visible", visible)}
        rows.append({"task_id": f"swe_lite-{i}", "env": "swe_lite",
                     "prompt": [{"role": "system", "content": "You are a software engineer working in a small "
                                 "Python repository. Use the tools to read the code, run the tests and edit files. "
                                 "When the tests pass, reply with a one-line summary of the fix."},
                                {"role": "user", "content": f"`python3 -m unittest` fails in this repository "
                                 f"(test_{module}.py). Find the bug in {module}.py and fix it."}],
                     "verifier_metadata": {"files": files,
                                           "hidden_tests": {f"test_hidden_{module}.py": test_file(module, "Hidden", hidden)},
                                           "reference_fix": {"path": f"{module}.py", "old": old, "new": new}}})
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
