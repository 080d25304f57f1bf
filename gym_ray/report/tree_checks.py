"""Tree rollouts' consistency for `gym-ray check`: a tree's leaves must be the ones its branching made.

Only leaves are rows; a branched node is implied by its children's ids ("0.1" is the parent of "0.1.0").
So a tree is consistent when every row's `parent_node_id` is its node id less the last step and no leaf is
also a branched node (orphans), the leaves cover the tree (a node that branched has all `width` children;
a node above the last level with no children is a leaf that ended early or failed, standing for its whole
subtree), and sibling leaves hold the same tokens, logprobs and loss mask up to their shared
`branch_token_offset`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc

from gym_ray.rundir import RunDir, read_run
from gym_ray.rundir.location import CONFIG

_NODE = re.compile(r"0(\.\d+)*")
_COLUMNS = ["rollout_id", "group_id", "task_id", "env", "segment_index", "tree_id", "node_id", "parent_node_id",
            "branch_token_offset", "prompt_token_ids", "response_token_ids", "response_logprobs",
            "response_loss_mask"]

# a finding: (check, detail, row or None) - the row names env, task, group and rollout
TreeFinding = tuple[str, str, dict]


def level(node_id: str) -> int:
    """Branch points above the node: "0" is the root (0), "0.1.0" is two levels down."""
    return node_id.count(".")


def tree_shape(run_dir: str | Path, node_ids: list[str]) -> tuple[int, int]:
    """(width, depth) of the run's trees: its config's `collect.tree`, else what the node ids show (the
    widest branching and deepest leaf of the whole run)."""
    try:
        tree = json.loads(RunDir.of(run_dir).meta(CONFIG).read_text())["collect"]["tree"]
        return int(tree["width"]), int(tree["depth"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    steps = [int(s) for n in node_ids if _NODE.fullmatch(n) for s in n.split(".")[1:]]
    return max(steps, default=0) + 1, max((level(n) for n in node_ids if _NODE.fullmatch(n)), default=0)


def tree_findings(run_dir: str | Path) -> list[TreeFinding]:
    """Every tree consistency break among the run's tree rows (none for a run without trees)."""
    table = read_run(run_dir, _COLUMNS)
    table = table.filter(pc.not_equal(table["tree_id"], ""))
    if table.num_rows == 0:
        return []
    rows = table.to_pylist()
    width, depth = tree_shape(run_dir, [r["node_id"] for r in rows])
    trees: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        trees[r["tree_id"]].append(r)
    out: list[TreeFinding] = []
    for tree_id, leaves in sorted(trees.items()):
        out += _orphans(tree_id, leaves, width, depth)
        out += _missing(tree_id, leaves, width, depth)
        out += _prefixes(tree_id, leaves)
    return out


def _orphans(tree_id: str, rows: list[dict], width: int, depth: int) -> list[TreeFinding]:
    leaves = {r["node_id"] for r in rows}
    out = []
    for r in rows:
        node, parent = r["node_id"], r["parent_node_id"]
        if not _NODE.fullmatch(node) or level(node) > depth or any(int(s) >= width for s in node.split(".")[1:]):
            why = f"is not a node of a width-{width}, depth-{depth} tree"
        elif parent != node.rpartition(".")[0]:
            why = f"names parent {parent!r}, but its parent is {node.rpartition('.')[0] or 'none (the root)'!r}"
        elif parent in leaves:
            why = f"has parent {parent!r}, which is itself a leaf row (a node either branches or ends)"
        else:
            continue
        out.append(("tree_orphan_node", f"tree {tree_id} node {node} {why}", r))
    return out


def _missing(tree_id: str, rows: list[dict], width: int, depth: int) -> list[TreeFinding]:
    """Walk the tree from its root: a node with leaves below it must have all `width` children."""
    leaves = {r["node_id"] for r in rows if _NODE.fullmatch(r["node_id"])}
    inner = {n.rsplit(".", k)[0] for n in leaves for k in range(1, level(n) + 1)}
    if not leaves:
        return []
    where = rows[0]
    out = []
    todo = ["0"]
    while todo:
        node = todo.pop()
        if node in leaves:
            continue
        if node not in inner:
            out.append(("tree_missing_leaf", f"tree {tree_id} node {node} has no leaf: its parent "
                                             f"{node.rpartition('.')[0]} branched, and no row ends it or fails it",
                        {**where, "rollout_id": None}))
        elif level(node) < depth:
            todo += [f"{node}.{k}" for k in range(width)]
    return out


def _prefixes(tree_id: str, rows: list[dict]) -> list[TreeFinding]:
    """Siblings (one parent, one segment) share their tokens up to their common branch_token_offset."""
    siblings: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        if r["parent_node_id"] and r["parent_node_id"] == r["node_id"].rpartition(".")[0]:  # orphans apart
            siblings[(r["parent_node_id"], r["segment_index"])].append(r)
    out = []
    for group in siblings.values():
        first, *others = sorted(group, key=lambda r: r["node_id"])
        for r in others:
            why = _prefix_break(first, r)
            if why:
                out.append(("tree_prefix_mismatch", f"tree {tree_id} node {r['node_id']} and its sibling "
                                                    f"{first['node_id']}: {why}", r))
    return out


def _prefix_break(a: dict, b: dict) -> str | None:
    k = a["branch_token_offset"]
    if b["branch_token_offset"] != k:
        return f"branch_token_offset {b['branch_token_offset']} against {k} (one branch point)"
    seqs = [r["prompt_token_ids"] + r["response_token_ids"] for r in (a, b)]
    if min(map(len, seqs)) < k:
        return f"a sequence shorter than the shared {k} tokens"
    for i in range(k):
        if seqs[0][i] != seqs[1][i]:
            return f"token {i} of the shared {k} is {seqs[1][i]} against {seqs[0][i]}"
    if len(a["prompt_token_ids"]) != len(b["prompt_token_ids"]) and k > min(len(a["prompt_token_ids"]),
                                                                              len(b["prompt_token_ids"])):
        return "prompt lengths differ within the shared prefix"
    n = max(0, k - len(a["prompt_token_ids"]))
    for name in ("response_logprobs", "response_loss_mask"):
        if a[name][:n] != b[name][:n]:
            i = next(j for j in range(n) if a[name][j] != b[name][j])
            return f"{name}[{i}] within the shared prefix is {b[name][i]} against {a[name][i]}"
    return None
