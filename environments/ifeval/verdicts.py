"""What IFEval-style benchmarks share around their own checkers (ifeval, and ifbench, which imports this):
the task row a benchmark record becomes, and the per-instruction verdicts as a reward."""

from __future__ import annotations

import json
from pathlib import Path

from gym_ray import VerifyResult


def task_row(env: str, record: dict) -> dict:
    """One gym_ray task row: the prompt as the user message, the checkers' inputs exactly as the data gives them."""
    return {"task_id": f"{env}-{record['key']}", "env": env,
            "prompt": [{"role": "user", "content": record["prompt"]}],
            "verifier_metadata": {"key": record["key"], "instruction_id_list": record["instruction_id_list"],
                                  "kwargs": record["kwargs"]}}


def write_rows(rows: list[dict], out: Path) -> None:
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def component_names(ids: list[str]) -> list[str]:
    """One name per instruction; an id a prompt repeats is numbered (`id#2`)."""
    return [i if ids.count(i) == 1 else f"{i}#{ids[:n + 1].count(i)}" for n, i in enumerate(ids)]


def result(ids: list[str], strict: list[bool], loose: list[bool], *, use_loose: bool,
           partial_credit: bool) -> VerifyResult:
    """The reward (all followed, or the fraction with `partial_credit`; strict unless `use_loose`), one
    strict component per instruction, and both levels of both checks in `info`."""
    followed = loose if use_loose else strict
    names = component_names(ids)
    missed = [n for n, ok in zip(names, followed, strict=True) if not ok]
    return VerifyResult(
        reward=sum(followed) / len(followed) if partial_credit else float(all(followed)),
        components={n: float(ok) for n, ok in zip(names, strict, strict=True)},
        info={"prompt_level_strict": all(strict), "prompt_level_loose": all(loose),
              "instruction_level_strict": sum(strict) / len(strict),
              "instruction_level_loose": sum(loose) / len(loose),
              "strict": strict, "loose": loose, **({"missed": missed} if missed else {})})
