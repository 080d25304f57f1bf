"""Tree advantages and shared-prefix loss weights: what a trainer needs from tree rollouts (`collect.tree`).

Pure functions over rows (pyarrow Tables, pandas DataFrames, `Rollout`s or row dicts), so every trainer
adapter computes the same numbers.

- `node_values`: the value of a tree node is the mean reward of the scored leaves below it (TreeRL's
  V(s), a Monte Carlo estimate from the tree's own leaves).
- `tree_advantages`: a leaf's advantage is its reward minus its parent's value (the mean of the leaves
  sharing its parent, itself included: TreeRL's local term, Tree-GRPO's intra-tree baseline); with
  `global_term`, plus its reward minus the tree's mean (TreeRL's global term, GRPO's group baseline).
  Rows outside trees have their group as the parent (plain GRPO; no global term).
- `prefix_loss_weights`: siblings repeat their shared prefix (`branch_token_offset` tokens) in every leaf
  row; `train_once` keeps those tokens' loss in one leaf per prefix (the first scored one), `weighted`
  gives each leaf's copy weight 1/(leaves sharing it), so the prefix counts once and, summed over its
  leaves, carries the mean of their advantages (the node's value against the baseline).

Failed (masked) rows are never counted: they have no advantage (None), add nothing to any mean, share
no prefix and get weight 0. A node with no scored leaf below it has no value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

PrefixMode = Literal["train_once", "weighted"]
PREFIX_MODES: tuple[str, ...] = ("train_once", "weighted")
DEFAULT_PREFIX_MODE: PrefixMode = "train_once"  # binary: what every trainer's loss mask can hold

_FIELDS = ("rollout_id", "group_id", "rollout_index", "segment_index", "num_segments", "reward", "mask_sample",
           "tree_id", "node_id", "parent_node_id", "branch_token_offset", "prompt_token_ids",
           "response_token_ids", "response_loss_mask", "gen_span_starts", "gen_span_ends")


def as_rows(rows: Any) -> list[Mapping[str, Any]]:
    """Rows as mappings: a pyarrow Table, a pandas DataFrame, `Rollout`s (pydantic) or dicts."""
    if hasattr(rows, "to_pylist"):
        return rows.to_pylist()
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return rows.to_dict("records")
    out = []
    for r in rows:
        out.append(r if isinstance(r, Mapping) else {k: getattr(r, k) for k in _FIELDS if hasattr(r, k)})
    return out


def _scored(r: Mapping[str, Any]) -> bool:
    """An episode's reward row: its last segment, not masked."""
    return not r.get("mask_sample", False) and r.get("segment_index", 0) == r.get("num_segments", 1) - 1


def _path(r: Mapping[str, Any]) -> tuple[tuple[str, str], list[str]]:
    """(the tree's key, the node ids from the root down to the leaf's parent) of a row; an independent
    rollout is a leaf of its group, a root that ended before branching its own parent."""
    if not r.get("tree_id"):
        return ("group", str(r["group_id"])), [""]
    parts = str(r["node_id"]).split(".")
    return ("tree", str(r["tree_id"])), [".".join(parts[:i]) for i in range(1, len(parts))] or ["0"]  # root leaf


def node_values(rows: Iterable[Any]) -> dict[tuple[str, str], float]:
    """{(tree_id, node_id): mean reward of the scored leaves below that node}; the root is node "0"."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for r in as_rows(rows):
        if not _scored(r) or not r.get("tree_id"):
            continue
        for node in _path(r)[1]:
            acc = sums[(str(r["tree_id"]), node)]
            acc[0] += float(r["reward"])
            acc[1] += 1
    return {k: s / n for k, (s, n) in sums.items()}


def tree_advantages(rows: Iterable[Any], *, global_term: bool = False) -> list[float | None]:
    """Each row's advantage, in input order: its episode's reward minus the mean reward of the scored leaves
    sharing its parent (`global_term`: plus the reward minus its tree's mean). None for masked rows. The
    earlier segments of an episode get its last segment's advantage (the reward is the episode's)."""
    rows = as_rows(rows)
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    reward: dict[str, float] = {}
    for r in rows:
        if _scored(r):
            tree, path = _path(r)
            for node in {path[0], path[-1]}:
                acc = sums[(tree, node)]
                acc[0] += float(r["reward"])
                acc[1] += 1
            reward[str(r["rollout_id"])] = float(r["reward"])
    out: list[float | None] = []
    for r in rows:
        rid = str(r["rollout_id"])
        if r.get("mask_sample", False) or rid not in reward:
            out.append(None)
            continue
        tree, path = _path(r)
        mean = {node: s / n for node in (path[0], path[-1]) for s, n in [sums[(tree, node)]]}
        adv = reward[rid] - mean[path[-1]]
        if global_term and tree[0] == "tree":
            adv += reward[rid] - mean[path[0]]
        out.append(adv)
    return out


def _list(values: Any) -> list:
    return [] if values is None else list(values)


def _shared(row: Mapping[str, Any], a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens of `a` (the sequence of `row`) are shared with `b`: their common prefix, up to
    `limit` and cut back to the start of the generation span it ends inside (a branch point is never inside
    one: past it, equal tokens are independent samples that happen to agree)."""
    n = 0
    for x, y in zip(a[:limit], b[:limit], strict=False):
        if x != y:
            break
        n += 1
    k = len(_list(row["prompt_token_ids"]))
    for s, e in zip(_list(row.get("gen_span_starts")), _list(row.get("gen_span_ends")), strict=True):
        if k + s < n < k + e:
            return k + s
    return n


def prefix_loss_weights(rows: Iterable[Any], mode: str = DEFAULT_PREFIX_MODE) -> list[list[float]]:
    """Each row's response loss mask, in input order, with its shared prefix counted once across its tree.

    Two unmasked leaves of one tree (same segment) share the tokens they have in common up to both rows'
    `branch_token_offset` and the branch point (the start of the model call their common prefix ends in). `train_once`: a shared token keeps its mask only in the first of the leaves
    sharing it (by rollout index), 0 in the others. `weighted`: each copy is weighted 1/(leaves sharing it).
    Tokens a leaf shares with no scored leaf keep their mask; a masked row's weights are all 0."""
    if mode not in PREFIX_MODES:
        raise ValueError(f"prefix loss mode {mode!r}: expected one of {', '.join(PREFIX_MODES)}")
    rows = as_rows(rows)
    weights = [[0.0 if r.get("mask_sample", False) else float(m) for m in _list(r.get("response_loss_mask"))]
               for r in rows]
    trees: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.get("tree_id") and not r.get("mask_sample", False) and r.get("branch_token_offset", 0) > 0:
            trees[(str(r["tree_id"]), int(r.get("segment_index", 0)))].append(i)
    for members in trees.values():
        members.sort(key=lambda i: (int(rows[i].get("rollout_index", 0)), i))
        seqs = {i: _list(rows[i]["prompt_token_ids"]) + _list(rows[i]["response_token_ids"]) for i in members}
        for a in members:
            n_prompt = len(_list(rows[a]["prompt_token_ids"]))
            limit = {b: min(rows[a]["branch_token_offset"], rows[b]["branch_token_offset"]) for b in members}
            shared = {b: _shared(rows[a], seqs[a], seqs[b], limit[b]) for b in members if b != a}
            w = weights[a]
            if mode == "train_once":
                owned_from = max((s for b, s in shared.items() if members.index(b) < members.index(a)), default=0)
                for t in range(0, max(0, owned_from - n_prompt)):
                    w[t] = 0.0
            else:
                count = [1] * max(0, max(shared.values(), default=0) - n_prompt)
                for s in shared.values():
                    for t in range(max(0, s - n_prompt)):
                        count[t] += 1
                for t, c in enumerate(count):
                    w[t] /= c
    return weights
