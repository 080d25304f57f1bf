"""BFCL's rows as gym_ray tasks, read from the installed `bfcl_eval` package at run time.

The tools are the task's functions in BFCL's own OpenAI conversion (`convert_to_tool`, after the
language-specific hints BFCL adds for inference); the grader gets the functions as BFCL's evaluation loads
them (without the hints) and the possible answers.
"""

from __future__ import annotations

from bfcl_eval.constants.category_mapping import (
    MULTI_TURN_CATEGORY,
    SINGLE_TURN_CATEGORY,
    TEST_COLLECTION_MAPPING,
)
from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
from bfcl_eval.constants.enums import ModelStyle
from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
from bfcl_eval.utils import (
    is_multi_turn,
    is_relevance_or_irrelevance,
    load_dataset_entry,
    load_ground_truth_entry,
)

from gym_ray.types import Message, Task, ToolSpec

from .tool_format import convert_to_tool

CATEGORIES = SINGLE_TURN_CATEGORY + MULTI_TURN_CATEGORY
# web_search and memory need outside services (SerpAPI, a sentence-transformers model); format_sensitivity
# is not scored by BFCL.
GROUPS = {g: [c for c in TEST_COLLECTION_MAPPING[g] if c in CATEGORIES]
          for g in ("single_turn", "multi_turn", "live", "non_live", "python", "non_python")}
GROUPS["all"] = CATEGORIES


def expand_categories(categories: str | list[str]) -> list[str]:
    """Category and group names (`single_turn`, `multi_turn`, `live`, `all`, ...) -> categories, in order."""
    names = [categories] if isinstance(categories, str) else list(categories)
    out: list[str] = []
    for name in names:
        if name not in CATEGORIES and name not in GROUPS:
            raise ValueError(f"categories: unknown BFCL category {name!r} (categories: {', '.join(CATEGORIES)}; "
                             f"groups: {', '.join(GROUPS)}; web_search, memory and format_sensitivity are not offered)")
        out += [c for c in GROUPS.get(name, [name]) if c not in out]
    return out


def openai_tools(functions: list[dict]) -> list[ToolSpec]:
    return [ToolSpec.from_openai(t) for t in convert_to_tool(functions, GORILLA_TO_OPENAPI, ModelStyle.OSSMODEL)]


def category_tasks(env: str, category: str) -> list[Task]:
    """Every row of one category."""
    offered = load_dataset_entry(category, include_prereq=False, include_language_specific_hint=True)
    graded = offered if is_multi_turn(category) else load_dataset_entry(  # multi-turn rows keep no functions
        category, include_prereq=False, include_language_specific_hint=False)
    answers = {} if is_relevance_or_irrelevance(category) else {
        a["id"]: a["ground_truth"] for a in load_ground_truth_entry(category)}
    tasks = []
    for entry, plain in zip(offered, graded, strict=True):
        meta = {"category": category, "id": entry["id"]}
        if entry["id"] in answers:
            meta["ground_truth"] = answers[entry["id"]]
        turns = entry["question"]
        if is_multi_turn(category):
            missed = {int(k): v for k, v in entry.get("missed_function", {}).items()}
            meta |= {"initial_config": entry["initial_config"], "involved_classes": entry["involved_classes"],
                     "turns": [[{"role": "user", "content": DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC}]
                               if i in missed else turn for i, turn in enumerate(turns)],
                     "added_tools": {str(i): [t.model_dump() for t in openai_tools(f)] for i, f in missed.items()}}
        else:
            meta["function"] = plain["function"]
        tasks.append(Task(task_id=entry["id"], env=env, prompt=[Message(**m) for m in turns[0]],
                          tools=openai_tools(entry["function"]), verifier_metadata=meta))
    return tasks


def load_tasks(env: str, categories: list[str], limit: int | None = None) -> list[Task]:
    tasks: list[Task] = []
    for category in categories:
        if limit is not None and len(tasks) >= limit:
            break
        tasks += category_tasks(env, category)
    return tasks[:limit] if limit is not None else tasks
